using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Whether the calling thread is running a static constructor that the runtime started natively, out of sight of
/// <see cref="CooperativeClassInit"/>: a greenlet must not park inside one (option (a) of docs/patching.md), because
/// another greenlet that touches the class waits for it in native code, holding the baton.
/// </summary>
/// <remarks>
/// <para>Where such constructors come from: ReadyToRun (precompiled) code, which all of the shared framework is. It
/// reaches a class's statics through an indirection cell that first points at the runtime's delay-load helper
/// (<c>DelayLoad_Helper</c> → <c>DynamicHelperWorker</c> → <c>DynamicHelperFixup</c> →
/// <c>MethodTable::CheckRunClassInitThrowing</c>, prestub.cpp), and a method's eager fixups run the same check from
/// the prestub. The initialising thread runs the constructor from there, the others wait in
/// <c>DoRunClassInitThrowing</c>: no managed method is on either path, so nothing can be detoured, unlike jitted code's
/// <c>InitHelpers.InitClassSlow</c>.</para>
/// <para>How it is told cheaply: managed code the runtime calls from native code always has an explicit Frame of the
/// runtime linked into the thread's Frame chain below it (a <c>DynamicHelperFrame</c>, a <c>PrestubMethodFrame</c>, the
/// InlinedCallFrame of a QCall); stack walks need it to cross the native frames. The head of that chain,
/// <c>Thread::m_pFrame</c>, is one read. A thread's verdict is kept with the head it was made for: while the head is the
/// same Frame, no code has been called from native code since, so the verdict stands, and the hot path costs three
/// reads and two compares. A new head (the first patched call after a native transition began or ended) costs one stack
/// walk that looks for a static constructor this thread is not recorded as running through
/// <see cref="CooperativeClassInit"/>.</para>
/// <para>The offset of <c>m_pFrame</c> is the runtime's own, not a contract: <see cref="Initialise"/> checks it by
/// running a static constructor natively and reading the chain inside and outside it; when the check fails, the
/// test is off (static constructors reached from precompiled code can then deadlock the hub, as before).</para>
/// </remarks>
internal static unsafe class NativeClassInit
{
    // Thread::m_pFrame in CoreCLR 10 on x64 (after m_State and m_fPreemptiveGCDisabled); checked by Initialise.
    private const int FrameOffset = 8;

    // FRAME_TOP: the thread has no explicit Frame.
    private const nint FrameTop = -1;

    private static int s_state; // 0 unchecked, 1 usable, 2 not usable

    // One thread-static read on the hot path: the verdict and the Frame it was made for, in one object per thread.
    [ThreadStatic] private static PerThread? t_state;

    private sealed class PerThread
    {
        public nint Thread;
        public nint Frame;
        public nint FrameWord0;
        public nint FrameWord1;
        public bool Inside;
        public bool Judging;
    }

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_DONT_USE_InternalThread")]
    private static extern ref nint InternalThread(Thread thread);

    /// <summary>Whether the calling thread is inside a static constructor the runtime started natively. Costs a stack
    /// walk when the thread's Frame chain has changed since it last asked; allocates then.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Inside()
    {
        if (s_state != 1) return false;
        if (t_state is not { } state) return Judge(null);
        nint frame = *(nint*)(state.Thread + FrameOffset);
        if (frame == state.Frame && (frame == FrameTop || (((nint*)frame)[0] == state.FrameWord0 && ((nint*)frame)[1] == state.FrameWord1)))
            return state.Inside;
        return Judge(state);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool Judge(PerThread? state)
    {
        state ??= t_state = new PerThread { Thread = InternalThread(Thread.CurrentThread) };
        // The walk may itself reach patched calls (a contended lock in reflection's caches): those run their originals.
        if (state.Judging) return true;
        state.Judging = true;
        try
        {
            bool inside = false;
            foreach (var stackFrame in new StackTrace(1, false).GetFrames())
            {
                if (stackFrame.GetMethod() is ConstructorInfo { IsStatic: true } cctor && cctor.DeclaringType is { } type
                    && !CooperativeClassInit.IsRunByThisThread(type))
                {
                    inside = true;
                    break;
                }
            }
            // Read after the walk: its own transitions have come and gone, and the head is the one the verdict is for.
            nint frame = *(nint*)(state.Thread + FrameOffset);
            state.Frame = frame;
            state.FrameWord0 = frame == FrameTop ? 0 : ((nint*)frame)[0];
            state.FrameWord1 = frame == FrameTop ? 0 : ((nint*)frame)[1];
            state.Inside = inside;
            return inside;
        }
        finally
        {
            state.Judging = false;
        }
    }

    /// <summary>Checks, once, that <see cref="FrameOffset"/> reads the runtime's Frame chain: outside a native call the
    /// head is FRAME_TOP or a Frame older than this method's own stack frame; inside a static constructor the runtime
    /// runs it is a newer Frame, between that constructor's stack and this method's. Patch calls it under Bypass, before
    /// writing any detour, so the probe's constructor runs through the runtime's own entry.</summary>
    internal static void Initialise()
    {
        if (s_state != 0) return;
        bool usable = false;
        try
        {
            nint thread = InternalThread(Thread.CurrentThread);
            if (thread != 0)
            {
                int marker = 0;
                nint here = (nint)(&marker);
                nint outside = *(nint*)(thread + FrameOffset);
                RuntimeHelpers.RunClassConstructor(typeof(FrameProbe).TypeHandle);
                usable = (outside == FrameTop || outside > here)
                    && FrameProbe.Frame != outside && FrameProbe.Frame > FrameProbe.StackThere && FrameProbe.Frame < here
                    && *(nint*)(thread + FrameOffset) == outside;
            }
        }
        catch (Exception)
        {
            usable = false;
        }
        s_state = usable ? 1 : 2;
    }

    private static class FrameProbe
    {
        public static readonly nint StackThere;
        public static readonly nint Frame;

#pragma warning disable CA1810 // the reads must happen inside the static constructor, which the runtime runs natively
        static FrameProbe()
        {
            int marker = 0;
            StackThere = (nint)(&marker);
            Frame = *(nint*)(InternalThread(Thread.CurrentThread) + FrameOffset);
        }
#pragma warning restore CA1810
    }
}
