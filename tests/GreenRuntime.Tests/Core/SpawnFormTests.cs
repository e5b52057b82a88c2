namespace GreenRuntime.Tests.Core;

/// <summary>
/// Which kind of greenlet each spawn form makes. C# prefers a Func&lt;Task&gt; overload for a lambda whose end is
/// unreachable, so these pin down that `Spawn` is always stackful, `SpawnAsync` always stackless, and an async
/// lambda given to `Spawn` is refused instead of becoming a greenlet that ends before its task.
/// </summary>
public class SpawnFormTests : HubTest
{
    [Test]
    public void AnEndlessWorkerLoopIsStackful()
    {
        var iterations = 0;
        var g = Green.Spawn(() => { while (true) { Green.Sleep(1); iterations++; } });
        Assert.That(g.IsStackless, Is.False);
        Green.Sleep(20);
        Assert.That(iterations, Is.GreaterThan(0));
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
    }

    [Test]
    public void ALambdaThatOnlyThrowsIsStackful()
    {
        var g = Green.Spawn(() => throw new InvalidOperationException("boom"));
        Assert.That(g.IsStackless, Is.False);
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void SpawnAsyncIsStacklessAlsoForAnEndlessLoop()
    {
        var e = new Event();
        var g = Green.SpawnAsync(async () => { while (true) await e.WaitAsync(); });
        Assert.That(g.IsStackless, Is.True);
        var v = Green.SpawnAsync(async () => { await Task.Yield(); return 7; });
        Assert.That(v.IsStackless, Is.True);
        Assert.That(v.Get(), Is.EqualTo(7));
        g.Kill();
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void AnAsyncLambdaGivenToSpawnIsRefusedWithTheRightName()
    {
        var before = Hub.AliveGreenlets().Count;
        var ex = Assert.Throws<ArgumentException>(() => Green.Spawn(async () => { await Task.Yield(); }));
        Assert.That(ex!.Message, Does.Contain("SpawnAsync"));
        Assert.Throws<ArgumentException>(() => Green.Spawn(async () => { await Task.Yield(); return 1; }));
        Assert.Throws<ArgumentException>(() => Green.Spawn(() => new ValueTask<int>(1)));
        Assert.That(Hub.AliveGreenlets().Count, Is.EqualTo(before), "nothing was spawned");
    }

    [Test]
    public void APoolGivesItsSlotBackWhenAnAsyncLambdaIsRefused()
    {
        var pool = new GreenPool(1);
        Assert.Throws<ArgumentException>(() => pool.Spawn(async () => { await Task.Yield(); return 1; }));
        Assert.That(pool.FreeCount, Is.EqualTo(1));
        Assert.That(pool.Count, Is.Zero);

        var first = pool.Spawn(() => { Green.Sleep(5); return 1; });
        var second = pool.SpawnAsync(async () => { await Task.Yield(); return 2; }); // waits for first's slot
        Assert.That(first.IsStackless, Is.False);
        Assert.That(second.IsStackless, Is.True);
        Assert.That(first.Get() + second.Get(), Is.EqualTo(3));
    }

    [Test]
    public void GreenletForAsyncIsStacklessAndWaitsForStart()
    {
        bool ran = false;
        var g = Greenlet.ForAsync(async () => { await Task.Yield(); ran = true; }, "unstarted");
        Green.Sleep(5);
        Assert.That(ran, Is.False, "not started yet");
        Assert.That(g.IsStackless, Is.True);
        g.Start();
        g.Join(TimeSpan.FromSeconds(10));
        Assert.That(ran, Is.True);
        Assert.Throws<ArgumentNullException>(() => Greenlet.ForAsync(null!));
    }
}
