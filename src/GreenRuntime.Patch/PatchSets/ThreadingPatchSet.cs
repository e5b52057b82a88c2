using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>Waits on thread-synchronisation primitives (see <see cref="CooperativeThreading"/>).</summary>
internal sealed class ThreadingPatchSet : PatchSet
{
    private static readonly Type C = typeof(CooperativeThreading);

    public static readonly ThreadingPatchSet Instance = new(); // after the fields its constructor uses

    public override string Name => "Threading";

    // Some WaitOne overloads have never run in a typical process and have no code yet: run each once.
    private static void WarmUpWaitOne()
    {
        using var signalled = new ManualResetEvent(true);
        signalled.WaitOne();
        signalled.WaitOne(0);
        signalled.WaitOne(TimeSpan.Zero);
        signalled.WaitOne(0, false);
        signalled.WaitOne(TimeSpan.Zero, false);
    }

    private static void WarmUpWaitMultiple()
    {
        using var signalled = new ManualResetEvent(true);
        WaitHandle.WaitAny([signalled], 0);
        WaitHandle.WaitAll([signalled], 0);
    }

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        new("System.Threading.SemaphoreSlim.WaitCore(Int64, CancellationToken)", CooperativeThreading.SemaphoreWaitCoreMethod, C.GetMethod(nameof(CooperativeThreading.SemaphoreWaitCore))!, CooperativeThreading.SemaphoreWait),
        Point(typeof(ManualResetEventSlim), "Wait", [typeof(int), typeof(CancellationToken)], C, nameof(CooperativeThreading.EventSlimWait), CooperativeThreading.EventWait),
        Point(typeof(WaitHandle), "WaitOne", [typeof(int)], C, "WaitOne", CooperativeThreading.WaitOneInt) with { WarmUp = WarmUpWaitOne },
        Point(typeof(WaitHandle), "WaitOne", [], C, "WaitOne", CooperativeThreading.WaitOneNone) with { WarmUp = WarmUpWaitOne },
        Point(typeof(WaitHandle), "WaitOne", [typeof(TimeSpan)], C, "WaitOne", CooperativeThreading.WaitOneTimeSpan) with { WarmUp = WarmUpWaitOne },
        Point(typeof(WaitHandle), "WaitOne", [typeof(int), typeof(bool)], C, "WaitOne", CooperativeThreading.WaitOneIntContext) with { WarmUp = WarmUpWaitOne },
        Point(typeof(WaitHandle), "WaitOne", [typeof(TimeSpan), typeof(bool)], C, "WaitOne", CooperativeThreading.WaitOneTimeSpanContext) with { WarmUp = WarmUpWaitOne },
        new("System.Threading.WaitHandle.WaitMultiple(ReadOnlySpan`1, Boolean, Int32) (WaitAll, WaitAny)", CooperativeThreading.WaitMultipleMethod, C.GetMethod(nameof(CooperativeThreading.WaitMultiple))!, CooperativeThreading.WaitMultipleSlot, WarmUpWaitMultiple),
        Point(typeof(Thread), "Join", [typeof(int)], C, "Join", CooperativeThreading.JoinInt),
        Point(typeof(Thread), "Join", [], C, "Join", CooperativeThreading.JoinNone),
        Point(typeof(Thread), "Join", [typeof(TimeSpan)], C, "Join", CooperativeThreading.JoinTimeSpan),
    ];

    public override IReadOnlyList<(string Method, string Reason)> KnownRefusals { get; } =
    [
        ("System.Threading.Monitor.Enter/TryEnter/Wait (C# lock statement)",
            "Not cooperative: Monitor is implemented inside the runtime (FCalls and JIT helpers the lock statement calls directly), so there is no managed body to detour; and a greenlet parked while holding a monitor would keep it owned by its carrier thread, so another greenlet of the hub blocking on it would block the whole hub. Do not hold a lock across a blocking call on a greenlet."),
        ("System.Threading.Lock.Enter (C# 13 lock on a Lock)",
            "Not cooperative: its contended path spins and then blocks in the runtime's own wait, and ownership is per OS thread; parking a greenlet inside it would hand a held lock to a different thread's stack. Same advice as for Monitor."),
        ("System.Threading.WaitHandle.WaitAll/WaitAny with a Mutex in the set",
            "Not cooperative: a mutex is owned by the thread that acquires it, so it cannot be acquired on the greenlet's behalf by another thread; a WaitAll/WaitAny whose set contains a Mutex runs the original blocking wait (sets without one are cooperative)."),
        ("System.Threading.Mutex.WaitOne",
            "Not cooperative: a mutex is owned by the thread that acquires it, so it cannot be acquired on the greenlet's behalf by another thread; WaitOne on a Mutex runs the original blocking wait."),
    ];
}
