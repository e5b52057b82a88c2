// Whether the calling thread runs managed code that native code called back: a managed callback given to a native
// library (a delegate through Marshal.GetFunctionPointerForDelegate, an [UnmanagedCallersOnly] function pointer) that
// the library calls while the P/Invoke into it has not returned.
//
// Why it matters: an exception that leaves such a callback would unwind through the library's native frames, which
// .NET does not allow: the runtime ends the process ("Unhandled exception", SIGABRT). A kill or timeout raised at a
// blocking point inside the callback did exactly that (libc qsort's comparer calling Thread.Sleep under
// Green.WithTimeout: 4 runs of 4; LibGit2Sharp's checkout-progress callback: 5 of 5). On a thread a timeout is an
// abandoned wait and only Thread.Interrupt can do it. So such code is no cancellation point (Hub.RaisePending, EndPark).
//
// How it is told, in CoreCLR 10 on x64 (checked by Initialise, off when the check fails): every forward P/Invoke in
// native code has an InlinedCallFrame linked into the thread's Frame chain (Thread::m_pFrame, the same word
// Patch's NativeClassInit reads), whose return-address field is non-zero exactly while the call is out (the JIT clears
// it when the call returns, and the Frame stays linked until its method returns). The reverse transition into the
// callback links nothing, so managed code below an *active* InlinedCallFrame runs inside a native call. The walk
// reads two words per Frame and is paid only when a kill, timeout or interrupt is about to be raised.
//
// Not every active InlinedCallFrame is a foreign library's. CoreLib's QCalls are P/Invokes into the runtime, and the
// runtime calls managed code from inside them: a static constructor (RuntimeHelpers.RunClassConstructor, jitted code's
// InitHelpers.InitClassSlow), an assembly-resolve handler (Assembly.Load, Type.GetType), an exception filter (the
// managed exception dispatcher's helpers mark their frames, m_Datum bits 1-2). The runtime carries exceptions across
// its own frames, so these stay cancellation points as before. Told apart by the Frame's m_Datum: the P/Invoke's
// MethodDesc when the JIT compiled the call site (CoreLib's is the runtime's own), zero or a tagged calli target
// otherwise (precompiled code, function-pointer calls, delegates for native function pointers), where the return
// address says whose code made the call: inside CoreLib's precompiled code (its executable mappings), the runtime's.
// In a single-file app CoreLib has no file of its own to find: those frames then count as foreign (a kill in an
// assembly-resolve handler waits for the load; static constructors run shielded anyway).

using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GreenRuntime.Scheduling;

internal static unsafe class ForeignCalls
{
    // Thread::m_pFrame in CoreCLR 10 on x64, after m_State and m_fPreemptiveGCDisabled.
    private const int ThreadFrameOffset = 8;

    // FRAME_TOP: the end of the chain.
    private const nint FrameTop = -1;

    // Frame: FrameIdentifier, m_Next. InlinedCallFrame then: m_Datum, m_pCallSiteSP, m_pCallerReturnAddress, ...
    private const nint InlinedCallFrameId = 1;
    private const int NextWord = 1;
    private const int DatumWord = 2;
    private const int ReturnAddressWord = 4;

    // m_Datum: bit 0 tags a calli target; bits 1-2 mark the exception dispatcher's helper calls (InlinedCallFrameMarker).
    private const nint CalliTag = 1;
    private const nint DispatcherMarks = 6;

    // A chain is short (one Frame per transition or P/Invoking method on the stack); a bound guards against a misread.
    private const int MaxFrames = 4096;

    private static int s_state; // 0 unchecked, 1 usable, 2 not usable
    private static (nint Start, nint End)[] s_coreLibCode = [];

    // The reflection that names a P/Invoke may itself reach a blocking point of the greenlet: the answer meanwhile is
    // the cautious one.
    [ThreadStatic] private static bool t_judging;

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_DONT_USE_InternalThread")]
    private static extern ref nint InternalThread(Thread thread);

    /// <summary>Whether the calling thread runs code that a foreign native call (not the runtime's own) called back, with
    /// that call still out. False when the runtime's layout did not pass the check (<see cref="Usable"/>).</summary>
    internal static bool Inside()
    {
        if (t_judging) return true;
        if (Volatile.Read(ref s_state) == 0) Initialise();
        if (s_state != 1) return false;
        t_judging = true;
        try
        {
            return Scan(*(nint*)(InternalThread(Thread.CurrentThread) + ThreadFrameOffset));
        }
        finally
        {
            t_judging = false;
        }
    }

    /// <summary>Whether the check of the runtime's layout passed (tests).</summary>
    internal static bool Usable
    {
        get
        {
            if (Volatile.Read(ref s_state) == 0) Initialise();
            return s_state == 1;
        }
    }

    private static bool Scan(nint frame)
    {
        for (int n = 0; frame != FrameTop && frame != 0 && n < MaxFrames; n++)
        {
            var words = (nint*)frame;
            if (words[0] == InlinedCallFrameId && words[ReturnAddressWord] != 0 && IsForeign(words[DatumWord], words[ReturnAddressWord]))
                return true;
            frame = words[NextWord];
        }
        return false;
    }

    private static bool IsForeign(nint datum, nint returnAddress)
    {
        datum &= ~DispatcherMarks;
        if (datum != 0 && (datum & CalliTag) == 0)
        {
            MethodBase? method = null;
            try
            {
                method = MethodBase.GetMethodFromHandle(RuntimeMethodHandle.FromIntPtr(datum));
            }
            catch (ArgumentException)
            {
            }
            return method?.Module.Assembly != typeof(object).Assembly;
        }
        foreach (var (start, end) in s_coreLibCode)
        {
            if (returnAddress >= start && returnAddress < end)
                return false;
        }
        return true;
    }

    /// <summary>Checks the layout once, on the first thread that asks: inside a callback that this method calls through an
    /// unmanaged function pointer, the head of the chain must be a new, active InlinedCallFrame on this stack between the
    /// callback's frame and this one, judged foreign; after the call that Frame must read inactive or be gone.</summary>
    private static void Initialise()
    {
        bool usable = false;
        // Greenlet code may ask first: the file read below must not park (it runs inside BeginPark).
        using var original = LowLevel.Parking.SuppressCooperation();
        try
        {
            s_coreLibCode = CoreLibCode();
            nint thread = InternalThread(Thread.CurrentThread);
            if (thread != 0)
            {
                int marker = 0;
                nint here = (nint)(&marker);
                Probe probe = default;
                ((delegate* unmanaged<nint, Probe*, void>)&Callback)(thread, &probe);
                nint head = *(nint*)(thread + ThreadFrameOffset);
                // The Frame lies between the callback's stack frame and this method's: in this method's own frame when the
                // JIT inlined the call, in an IL stub's below it otherwise. After the call it is inactive (the JIT clears its
                // return address) or unlinked (the stub returned): the head is then an older Frame, or none.
                usable = probe.Head > probe.Stack && probe.Head - here < 4096 && probe.ActiveForeign
                    && (head == probe.Head ? ((nint*)head)[ReturnAddressWord] == 0 : head == FrameTop || head > here);
            }
        }
        catch (Exception)
        {
            usable = false;
        }
        Volatile.Write(ref s_state, usable ? 1 : 2);
    }

    private struct Probe
    {
        public nint Stack;
        public nint Head;
        public bool ActiveForeign;
    }

    [UnmanagedCallersOnly]
    private static void Callback(nint thread, Probe* probe)
    {
        int marker = 0;
        probe->Stack = (nint)(&marker);
        nint head = *(nint*)(thread + ThreadFrameOffset);
        probe->Head = head;
        if (head == FrameTop || head == 0) return;
        var words = (nint*)head;
        probe->ActiveForeign = words[0] == InlinedCallFrameId && words[ReturnAddressWord] != 0 && IsForeign(words[DatumWord], words[ReturnAddressWord]);
    }

    /// <summary>The executable mappings of CoreLib's file (its precompiled code), from /proc/self/maps.</summary>
    private static (nint Start, nint End)[] CoreLibCode()
    {
        string path = typeof(object).Assembly.Location;
        if (path.Length == 0 || !OperatingSystem.IsLinux()) return [];
        var ranges = new List<(nint, nint)>();
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            // start-end perms offset dev inode path
            if (!line.EndsWith(path, StringComparison.Ordinal)) continue;
            var fields = line.Split(' ', 3);
            if (fields.Length < 2 || fields[1].Length < 3 || fields[1][2] != 'x') continue;
            var bounds = fields[0].Split('-');
            ranges.Add(((nint)Convert.ToInt64(bounds[0], 16), (nint)Convert.ToInt64(bounds[1], 16)));
        }
        return [.. ranges];
    }
}
