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

    private static void WarmUpReleaseMutex()
    {
        using var mutex = new Mutex(initiallyOwned: true);
        mutex.ReleaseMutex();
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
        Point(typeof(Mutex), "ReleaseMutex", [], C, nameof(CooperativeThreading.ReleaseMutex), CooperativeThreading.ReleaseMutexSlot) with { WarmUp = WarmUpReleaseMutex },
        Point(typeof(Thread), "StartCore", [], C, nameof(CooperativeThreading.StartCore), CooperativeThreading.StartCoreSlot),
        Point(typeof(Thread), "Interrupt", [], C, nameof(CooperativeThreading.Interrupt), CooperativeThreading.InterruptSlot),
        Point(typeof(Thread), "Join", [typeof(int)], C, "Join", CooperativeThreading.JoinInt),
        Point(typeof(Thread), "Join", [], C, "Join", CooperativeThreading.JoinNone),
        Point(typeof(Thread), "Join", [typeof(TimeSpan)], C, "Join", CooperativeThreading.JoinTimeSpan),
        Point(typeof(GC), "WaitForPendingFinalizers", [], C, "WaitForPendingFinalizers", CooperativeThreading.WaitForFinalizers),
    ];
}
