using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Core;

public class PinnedHubTests : HubTest
{
    protected override HubOptions CreateOptions(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory) =>
        new() { LoggerFactory = loggerFactory, PinCarriersToOneCpu = true };

    [Test]
    public void EveryCarrierRunsOnTheHubsCpu()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("CPU pinning is implemented with sched_setaffinity (Linux).");
        var cpus = new HashSet<int> { Affinity.CurrentCpu() };
        var gs = Enumerable.Range(0, 8).Select(_ => Green.Spawn(() =>
        {
            for (int i = 0; i < 20; i++) { cpus.Add(Affinity.CurrentCpu()); Green.Sleep(0); }
        })).ToList();
        Green.JoinAll(gs);
        Assert.That(cpus, Has.Count.EqualTo(1));
    }
}

public class SpawnStackTests : HubTest
{
    protected override HubOptions CreateOptions(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory) =>
        new() { LoggerFactory = loggerFactory, TrackSpawnStacks = true };

    [Test]
    public void TheSpawnSiteIsRecorded()
    {
        var g = Green.Spawn(() => { });
        Assert.That(g.SpawnStack, Does.Contain(nameof(TheSpawnSiteIsRecorded)));
        g.Join();
    }
}
