namespace GreenRuntime.Tests.Core;

/// <summary>Many greenlets, carrier pool and its cap.</summary>
public class StressTests : HubTest
{
    [Test]
    public void TenThousandRandomSleepersAllCompleteAndCarriersReturnToThePool()
    {
        var random = new Random(1234);
        int finished = 0;
        var gs = Enumerable.Range(0, 10_000).Select(_ =>
        {
            var ms = random.Next(0, 51);
            return Green.Spawn(() => { Green.Sleep(ms); finished++; });
        }).ToList();
        var done = Green.JoinAll(gs, timeout: TimeSpan.FromMinutes(2));
        Assert.That(done, Has.Count.EqualTo(10_000));
        Assert.That(finished, Is.EqualTo(10_000));
        Assert.That(Hub.AliveCount, Is.Zero);
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        // Every carrier is back in the pool once the last one parks there (it hands the baton to main first).
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (pool.Idle < pool.Created && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.That(pool.Idle, Is.EqualTo(pool.Created));
    }

    [Test]
    public void ExceedingMaxCarriersIsAClearError()
    {
        Hub.Dispose();
        Hub = new Hub(new HubOptions { MaxCarriers = 10 });
        var gs = Enumerable.Range(0, 12).Select(_ => Green.Spawn(() => Green.Sleep(50))).ToList();
        Green.JoinAll(gs);
        var refused = gs.Where(g => !g.Successful).ToList();
        Assert.That(refused, Has.Count.EqualTo(2), "ten carriers keep ten sleepers; the other two cannot run");
        Assert.That(refused[0].Exception!.Message, Does.Contain("MaxCarriers = 10"));
        Assert.That(Green.Spawn(() => 1).Get(), Is.EqualTo(1), "the cap counts only greenlets alive");
    }

    [Test]
    public void DisposingTheHubKillsWhatIsLeft()
    {
        var finallyRan = 0;
        for (int i = 0; i < 50; i++)
            Green.Spawn(() => { try { Green.Sleep(60_000); } finally { finallyRan++; } });
        Green.Sleep(0);
        Assert.That(Hub.AliveCount, Is.EqualTo(50));
        Hub.Dispose();
        Assert.That(finallyRan, Is.EqualTo(50));
        Hub = new Hub();
    }
}

public class CarrierPoolTests
{
    [Test]
    public void IdleCarriersAboveTheMinimumRetireAfterTheTimeout()
    {
        // A pool of its own (odd stack size) so other tests' carriers do not interfere.
        var pool = GreenRuntime.Scheduling.CarrierPool.For(256 * 1024 + 4096);
        using (var hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 4096 }))
        {
            var gs = Enumerable.Range(0, 40).Select(_ => Green.Spawn(() => Green.Sleep(20))).ToList();
            Green.JoinAll(gs);
        }
        Assert.That(pool.Created, Is.GreaterThan(GreenRuntime.Scheduling.CarrierPool.MinIdle));
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (pool.Created > GreenRuntime.Scheduling.CarrierPool.MinIdle && DateTime.UtcNow < deadline) Thread.Sleep(100);
        Assert.That(pool.Created, Is.EqualTo(GreenRuntime.Scheduling.CarrierPool.MinIdle));
        Assert.That(pool.Idle, Is.EqualTo(pool.Created));
    }
}
