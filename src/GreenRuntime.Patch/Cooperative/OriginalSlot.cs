using GreenRuntime.Detours;

namespace GreenRuntime.Cooperative;

/// <summary>
/// How a replacement reaches the original implementation of the method it replaces.
/// </summary>
/// <remarks>
/// <para>Before the method is ever detoured, <see cref="Call"/> is a plain delegate that calls the method
/// directly (so the cooperative implementations work, and can be tested, without any patching). From the
/// moment a detour is being created it must never be that delegate again: a direct call would come straight
/// back to the replacement. Once the detour exists, <see cref="Call"/> is the detour's original, which stays
/// valid after the detour is undone (it then does what a direct call does) and across re-patching (the
/// engine freezes the method's body, so the relocated prologue stays correct).</para>
/// <para>Invariant: while <see cref="Patching"/> is set and no original is bound yet, <see cref="Call"/>
/// waits for the binding instead of returning the direct delegate. The patch registry binds the slot from
/// <c>Detour.Create</c>'s beforeLive callback, before the jump is written, so that window is empty there; the
/// wait remains for any caller that binds after <c>Create</c> returns.</para>
/// </remarks>
internal sealed class OriginalSlot<TDelegate> : IOriginalSlot
    where TDelegate : Delegate
{
    private readonly TDelegate _direct;
    private readonly TDelegate? _reentrant;
    private TDelegate? _original;
    private nint _entry;
    private volatile bool _patching;
    private int _patchingThread;

    /// <param name="direct">Calls the method directly: right only while it is not detoured.</param>
    /// <param name="reentrant">Does the original's work without calling it, for a call made by the patching
    /// thread itself between the jump being written and <see cref="Bind"/> (the detour engine reads
    /// /proc/self/maps through File.ReadLines after writing the jump, which reaches RandomAccess.ReadAtOffset).</param>
    public OriginalSlot(TDelegate direct, TDelegate? reentrant = null)
    {
        _direct = direct;
        _reentrant = reentrant;
    }

    /// <summary>The delegate that runs the original implementation.</summary>
    public TDelegate Call => _original ?? (_patching ? WaitForBinding() : _direct);

    /// <summary>
    /// The original's entry for a <c>delegate*</c> call (the fast off-greenlet path: no delegate, no shuffle
    /// thunk), or 0 while no detour is bound: callers then use <see cref="Call"/>. Once set it never changes
    /// back (the trampoline stays valid after the detour is undone, and re-patching reuses the slot's first
    /// binding only if the engine returns the same original; a later Bind overwrites it with the new one).
    /// </summary>
    public nint Entry
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => _entry;
    }

    /// <summary>True between <see cref="BeginPatching"/> and <see cref="Bind"/> or <see cref="AbortPatching"/>.</summary>
    public bool Patching => _patching;

    public void BeginPatching()
    {
        _patchingThread = Environment.CurrentManagedThreadId;
        _patching = true;
    }

    public void Bind(Detour detour)
    {
        // Build the original's stub now, never lazily on a hot path.
        Volatile.Write(ref _original, detour.GetOriginal<TDelegate>());
        Volatile.Write(ref _entry, detour.OriginalEntry);
        _patching = false;
        AssertBound();
    }

    public void AbortPatching() => _patching = false;

    private TDelegate WaitForBinding()
    {
        // Thread.SpinWait only: SpinWait.SpinOnce may call Thread.Sleep/Yield, which may be patched themselves.
        TDelegate? bound;
        if (Volatile.Read(ref _original) is null && _patching && _patchingThread == Environment.CurrentManagedThreadId)
        {
            // The patching thread itself re-entered the method while the detour is being created: waiting would
            // deadlock, a direct call would come back here.
            return _reentrant ?? throw new InvalidOperationException(
                $"Internal error: {typeof(TDelegate).Name}'s target was called by the thread patching it before its original was bound, and no re-entrant fallback exists for it.");
        }
        while ((bound = Volatile.Read(ref _original)) is null)
        {
            if (!_patching) return _direct; // the detour was refused: nothing was written, a direct call is right
            Thread.SpinWait(64);
        }
        return bound;
    }

    [System.Diagnostics.Conditional("DEBUG")]
    private void AssertBound() =>
        System.Diagnostics.Debug.Assert(_original is not null, "An OriginalSlot must hold the detour's original once Bind returned.");
}

/// <summary>The untyped face of <see cref="OriginalSlot{TDelegate}"/> that the patch registry uses.</summary>
internal interface IOriginalSlot
{
    void BeginPatching();

    void Bind(Detour detour);

    void AbortPatching();
}
