using BenchmarkDotNet.Attributes;
using GreenRuntime;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// Core switch and spawn costs, comparable with the gevent anchors in bench/SideBySide/anchors: each benchmark reports the time per
/// switch (or per spawn+join) through OperationsPerInvoke.
/// </summary>
[MemoryDiagnoser]
public class SwitchBenchmarks
{
    private const int Switches = 100_000;
    private const int Spawns = 100_000;
    private Hub _hub = null!;

    [GlobalSetup]
    public void Setup() => _hub = new Hub(new HubOptions { MaxBlockingTime = null });

    [GlobalCleanup]
    public void Cleanup() => _hub.Dispose();

    /// <summary>Two stackful greenlets ping-pong with Sleep(0): every switch is one futex hand-off.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void StackfulSleep0Switch()
    {
        static void Worker()
        {
            for (int i = 0; i < Switches / 2; i++) Green.Sleep(0);
        }
        Green.JoinAll([Green.Spawn(Worker), Green.Spawn(Worker)]);
    }

    /// <summary>Two stackless greenlets ping-pong with await Task.Yield(): continuations run inline on the hub.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void StacklessYieldSwitch()
    {
        static async Task Worker()
        {
            for (int i = 0; i < Switches / 2; i++) await Task.Yield();
        }
        Green.JoinAll([Green.SpawnAsync(Worker), Green.SpawnAsync(Worker)]);
    }

    /// <summary>Spawn 100k greenlets with empty bodies and join them all.</summary>
    [Benchmark(OperationsPerInvoke = Spawns)]
    public void SpawnJoin()
    {
        var all = new Greenlet[Spawns];
        for (int i = 0; i < all.Length; i++) all[i] = Green.Spawn(static () => { });
        Green.JoinAll(all);
    }
}
