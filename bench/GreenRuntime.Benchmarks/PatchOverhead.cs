using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What a patched method costs off a greenlet (the goal: at most 5 ns per call): non-blocking calls of
/// <c>ManualResetEventSlim.Wait(0)</c> on a set event and <c>SemaphoreSlim.Wait(0)</c> + <c>Release()</c>,
/// 10 M calls each, best of 9, first unpatched, then after <c>Patch.Threading()</c>, on a thread without a hub.
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-patch [calls]
/// </remarks>
internal static class PatchOverhead
{
    public static void Run(int calls)
    {
        var inlined = Measure(calls, EventLoop, SemaphoreLoop);
        var report = Patch.Threading();
        if (report.Patched.Count == 0) Console.WriteLine("warning: nothing was patched: " + string.Join("; ", report.Refused));
        // Loops first compiled after patching: a loop compiled before may have inlined the target, and then
        // never reaches the detour (see docs/patching.md).
        var patched = Measure(calls, EventLoopAfter, SemaphoreLoopAfter);
        var stale = Measure(calls, EventLoop, SemaphoreLoop);
        if (Environment.GetEnvironmentVariable("PATCH_OVERHEAD_PARTS") == "1") Parts(calls);
        Patch.UndoAll();
        // The fair baseline: the same call to the original, not inlined (an undone target stays NotInline).
        var notInlined = Measure(calls, EventLoopUndone, SemaphoreLoopUndone);
        foreach (var (name, ns) in patched)
        {
            Console.WriteLine($"{{\"bench\": \"offhub_{name}\", \"N\": {calls}, \"original_inlined_ns\": {inlined[name]:F1}, " +
                $"\"original_called_ns\": {notInlined[name]:F1}, \"patched_ns\": {ns:F1}, \"overhead_vs_called_ns\": {ns - notInlined[name]:F1}, " +
                $"\"caller_compiled_before_patching_ns\": {stale[name]:F1}}}");
        }
    }

    private static Dictionary<string, double> Measure(int calls, Action<ManualResetEventSlim, int> eventLoop, Action<SemaphoreSlim, int> semaphoreLoop)
    {
        using var e = new ManualResetEventSlim(true);
        using var s = new SemaphoreSlim(1);
        return new Dictionary<string, double>
        {
            ["ManualResetEventSlim.Wait(0)"] = Best(calls, () => eventLoop(e, calls)),
            ["SemaphoreSlim.Wait(0)+Release"] = Best(calls, () => semaphoreLoop(s, calls)),
        };
    }

    private static double Best(int calls, Action run) => BestOf.NsPerCall(calls, run, rounds: 9, settle: true);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EventLoop(ManualResetEventSlim e, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!e.Wait(0)) throw new InvalidOperationException("the event is set");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SemaphoreLoop(SemaphoreSlim s, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!s.Wait(0)) throw new InvalidOperationException("the semaphore has a count");
            s.Release();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EventLoopAfter(ManualResetEventSlim e, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!e.Wait(0)) throw new InvalidOperationException("the event is set");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SemaphoreLoopAfter(SemaphoreSlim s, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!s.Wait(0)) throw new InvalidOperationException("the semaphore has a count");
            s.Release();
        }
    }

    // Where the overhead goes (PATCH_OVERHEAD_PARTS=1): the replacement called directly (no detour jump), and
    // a bare calli of the original's entry (no hub check either).
    private static unsafe void Parts(int calls)
    {
        using var e = new ManualResetEventSlim(true);
        Console.WriteLine($"replacement called directly: {Best(calls, () => ReplacementLoop(e, calls)):F1} ns");
        Console.WriteLine($"calli of the original entry: {Best(calls, () => EntryLoop(e, calls)):F1} ns");
        Console.WriteLine($"delegate of the original: {Best(calls, () => DelegateLoop(e, calls)):F1} ns");
        Console.WriteLine($"hub check only: {Best(calls, () => HubCheckLoop(calls)):F1} ns");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ReplacementLoop(ManualResetEventSlim e, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!GreenRuntime.Cooperative.CooperativeThreading.EventSlimWait(e, 0, default)) throw new InvalidOperationException();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe void EntryLoop(ManualResetEventSlim e, int calls)
    {
        var f = (delegate* managed<ManualResetEventSlim, int, CancellationToken, bool>)GreenRuntime.Cooperative.CooperativeThreading.EventWait.Entry;
        for (int i = 0; i < calls; i++)
        {
            if (!f(e, 0, default)) throw new InvalidOperationException();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void HubCheckLoop(int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (GreenRuntime.Cooperative.Cooperative.ParkingHub() is not null) throw new InvalidOperationException();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void DelegateLoop(ManualResetEventSlim e, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!GreenRuntime.Cooperative.CooperativeThreading.EventWait.Call(e, 0, default)) throw new InvalidOperationException();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EventLoopUndone(ManualResetEventSlim e, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!e.Wait(0)) throw new InvalidOperationException("the event is set");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SemaphoreLoopUndone(SemaphoreSlim s, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (!s.Wait(0)) throw new InvalidOperationException("the semaphore has a count");
            s.Release();
        }
    }
}
