using System.Collections.Concurrent;
using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Groups;

/// <summary>HubGroup: construction, placement, parallelism, disposal, failures.</summary>
public class HubGroupTests : GroupTest
{
    [Test]
    public void BadArgumentsAreRefusedClearly()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new HubGroup(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HubGroup(new HubGroupOptions { HubCount = 5000 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HubGroup(new HubGroupOptions { DisposeTimeout = TimeSpan.Zero }));
        Assert.Throws<ArgumentNullException>(() => new HubGroup(null!));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Group.SpawnOn(4, () => { }));
        Assert.That(e!.ParamName, Is.EqualTo("hubIndex"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Group.SpawnOn(-2, () => 1));
        Assert.Throws<ArgumentNullException>(() => Group.Spawn((Action)null!));
    }

    [Test]
    public void DefaultCountIsOneHubPerCpu()
    {
        using var g = new HubGroup(0, new HubOptions { MaxBlockingTime = null });
        Assert.That(g.Hubs, Has.Count.EqualTo(Environment.ProcessorCount));
    }

    [Test]
    public void AHubPerCpuNeverWakesACarrierAheadOfItsTurn()
    {
        // Every CPU has a baton holder to keep busy: a carrier woken to watch for the baton would take a CPU from one.
        using var g = new HubGroup(0, new HubOptions { MaxBlockingTime = null });
        var all = Enumerable.Range(0, 20).Select(_ => g.SpawnOn(0, () =>
        {
            for (int r = 0; r < 50; r++) Green.Sleep(0);
        })).ToList();
        foreach (var greenlet in all) greenlet.Join(TimeSpan.FromSeconds(30));
        Assert.That(all.All(x => x.Successful), Is.True);
        Assert.That(g.Hubs[0].GetRunInfo().NudgesSent, Is.Zero);
    }

    [Test]
    public void EachHubRunsItsGreenletsOnItsOwnThread()
    {
        var seen = new Greenlet<(Hub, Hub, int)>[Group.Hubs.Count];
        for (int i = 0; i < seen.Length; i++)
            seen[i] = Group.SpawnOn(i, () => (Hub.Current, Green.Current.Hub, Environment.CurrentManagedThreadId));
        for (int i = 0; i < seen.Length; i++)
        {
            var (current, own, _) = seen[i].Get(TimeSpan.FromSeconds(10));
            Assert.That(current, Is.SameAs(Group.Hubs[i]));
            Assert.That(own, Is.SameAs(Group.Hubs[i]));
            Assert.That(seen[i].Hub, Is.SameAs(Group.Hubs[i]));
        }
        Assert.That(Group.Hubs.Distinct().Count(), Is.EqualTo(4));
        // every overload, placed or chosen
        Assert.That(Group.Spawn(() => 41 + 1).Get(TimeSpan.FromSeconds(10)), Is.EqualTo(42));
        Assert.That(Group.SpawnAsync(async () => { await Task.Yield(); return "async"; }).Get(TimeSpan.FromSeconds(10)), Is.EqualTo("async"));
        int ran = 0;
        Group.SpawnAsync(async () => { await Green.SleepAsync(TimeSpan.FromMilliseconds(1)); ran++; }).Join(TimeSpan.FromSeconds(10));
        Group.SpawnOnAsync(3, async () => { await Task.Yield(); ran++; }).Join(TimeSpan.FromSeconds(10));
        Assert.That(Group.SpawnOnAsync(2, async () => { await Task.Yield(); return Hub.Current; }).Get(TimeSpan.FromSeconds(10)), Is.SameAs(Group.Hubs[2]));
        Assert.That(ran, Is.EqualTo(2));
    }

    [Test]
    public void GreenletsOfTwoHubsRunInParallel()
    {
        // Each loop computes without ever blocking until it has seen the other one running. Greenlets of one hub cannot
        // do that (the first would hold the baton forever); of two hubs they must overlap.
        var flags = new int[2];
        Greenlet<bool> Loop(int me) => Group.SpawnOn(me, () =>
        {
            Volatile.Write(ref flags[me], 1);
            var sw = Stopwatch.StartNew();
            while (Volatile.Read(ref flags[1 - me]) == 0)
            {
                if (sw.Elapsed > TimeSpan.FromSeconds(20)) return false;
                Thread.SpinWait(100);
            }
            return true;
        });
        var a = Loop(0);
        var b = Loop(1);
        Assert.That(a.Get(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(b.Get(TimeSpan.FromSeconds(30)), Is.True);
    }

    [Test]
    public void SpawnPlacesOnTheLeastLoadedHub()
    {
        // Hub 0 is busy: one greenlet holds its baton and three more are ready behind it.
        int release = 0;
        var busy = Group.SpawnOn(0, () => { while (Volatile.Read(ref release) == 0) Thread.SpinWait(100); });
        WaitUntil(() => Group.Hubs[0].Load >= 1 && busy.State == GreenletState.Running, "hub 0 runs the busy greenlet");
        var behind = Enumerable.Range(0, 3).Select(_ => Group.SpawnOn(0, () => { })).ToList();
        var placed = Enumerable.Range(0, 6).Select(_ => Group.Spawn(() => Hub.Current)).ToList();
        foreach (var p in placed)
            Assert.That(p.Hub, Is.Not.SameAs(Group.Hubs[0]), "never on the busy hub");
        Volatile.Write(ref release, 1);
        Green.JoinAll(placed.Concat(behind).Append(busy), TimeSpan.FromSeconds(10));
        foreach (var p in placed) Assert.That(((Greenlet<Hub>)p).Value, Is.SameAs(p.Hub), "it ran where it was placed");
    }

    [Test]
    public void ABurstOfSpawnsSpreadsOverTheHubs()
    {
        var gs = Enumerable.Range(0, 40).Select(_ => Group.Spawn(() => Green.Sleep(50))).ToList();
        var perHub = gs.GroupBy(g => g.Hub).ToDictionary(x => x.Key, x => x.Count());
        Assert.That(perHub.Keys, Has.Count.EqualTo(4), "every hub got some");
        Assert.That(perHub.Values.Min(), Is.GreaterThanOrEqualTo(4));
        Green.JoinAll(gs, TimeSpan.FromSeconds(10));
    }

    [Test]
    public void DisposeKillsTheRemainingGreenletsAndStopsTheThreads()
    {
        int unwound = 0;
        var sleepers = Enumerable.Range(0, 8).Select(i => Group.Spawn(() =>
        {
            try { Green.Sleep(TimeSpan.FromHours(1)); }
            finally { Interlocked.Increment(ref unwound); }
        })).ToList();
        var asyncSleeper = Group.SpawnAsync(async () => await Task.Delay(TimeSpan.FromHours(1), Green.Current.CancellationToken));
        WaitUntil(() => sleepers.All(g => g.State == GreenletState.Parked), "the sleepers sleep");
        Group.Dispose();
        Assert.That(unwound, Is.EqualTo(8));
        Assert.That(sleepers.All(g => g.Dead && g.Successful && g.Value is GreenletExit), Is.True);
        Assert.That(asyncSleeper.Dead, Is.True);
        Assert.That(Group.Hubs.All(h => h.IsDisposed), Is.True, "each hub was disposed on its thread");
        Assert.That(Group.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => Group.Spawn(() => { }));
        Assert.Throws<ObjectDisposedException>(() => Group.SpawnOn(1, () => 1));
        Group.Dispose(); // idempotent
    }

    [Test]
    public void DisposeFromInsideTheGroupIsRefused()
    {
        var attempt = Group.Spawn(() =>
        {
            try { Group.Dispose(); return "disposed"; }
            catch (InvalidOperationException e) { return e.Message; }
        });
        Assert.That(attempt.Get(TimeSpan.FromSeconds(10)), Does.Contain("cannot be disposed from one of its own hubs"));
        Assert.That(Group.IsDisposed, Is.False);
    }

    [Test]
    public void AFailedHubIsReportedAndTheOthersGoOn()
    {
        Group.InjectLoopFailure(1, new InvalidOperationException("boom"));
        WaitUntil(() => Logs.Entries.ToArray().Any(e => e.EventId.Id == 17), "the failure is logged");
        var entry = Logs.Entries.ToArray().First(e => e.EventId.Id == 17);
        Assert.That(entry.Message, Does.Contain("Hub 1"));
        Assert.That(entry.Exception!.Message, Is.EqualTo("boom"));
        var e = Assert.Throws<InvalidOperationException>(() => Group.SpawnOn(1, () => { }));
        Assert.That(e!.Message, Does.Contain("failed"));
        var placed = Enumerable.Range(0, 12).Select(_ => Group.Spawn(() => Hub.Current)).ToList();
        Green.JoinAll(placed, TimeSpan.FromSeconds(10));
        Assert.That(placed.All(g => g.Successful && g.Hub != Group.Hubs[1]), Is.True);
    }

    [Test]
    public void HubsCanBePinnedToCpus()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("CPU affinity is Linux-only");
        using var pinned = new HubGroup(new HubGroupOptions { HubCount = 2, PinHubsToCpus = true, Hub = new HubOptions { MaxBlockingTime = null } });
        var masks = Enumerable.Range(0, 2).Select(i => pinned.SpawnOn(i, () => Affinity.Save()!)).ToList();
        foreach (var m in masks)
        {
            var mask = m.Get(TimeSpan.FromSeconds(10));
            Assert.That(mask.Sum(w => System.Numerics.BitOperations.PopCount(w)), Is.EqualTo(1), "a greenlet of a pinned hub runs on one CPU");
        }
        var unpinned = Group.SpawnOn(0, () => Affinity.Save()!).Get(TimeSpan.FromSeconds(10));
        Assert.That(unpinned.Sum(w => System.Numerics.BitOperations.PopCount(w)), Is.EqualTo(Affinity.Save()!.Sum(w => System.Numerics.BitOperations.PopCount(w))), "off by default");
    }

    [Test]
    public void HubsPrestartingTogetherShareOnePoolAndReleaseWhatTheyKeptWhenDisposed()
    {
        // A pool of its own (odd stack size); both hubs ask at once, each from its own thread.
        var options = new HubOptions { MaxBlockingTime = null, CarrierStackSize = 256 * 1024 + 13 * 4096, PrestartCarriers = 16 };
        var pool = GreenRuntime.Scheduling.CarrierPool.For(options.CarrierStackSize);
        using (var group = new HubGroup(new HubGroupOptions { HubCount = 2, Hub = options }))
        {
            Assert.That(group.Hubs.Select(h => h.Options.PrestartCarriers), Is.All.EqualTo(16));
            Assert.That(pool.Created, Is.EqualTo(16), "one number for the pool, not one per hub");
            Assert.That(pool.Kept, Is.EqualTo(16));
            var sleepers = Enumerable.Range(0, 12).Select(i => group.SpawnOn(i % 2, () => { Green.Sleep(20); return i; })).ToList();
            Assert.That(sleepers.Select(g => g.Get(TimeSpan.FromSeconds(10))), Is.EqualTo(Enumerable.Range(0, 12)));
        }
        Assert.That(pool.Kept, Is.Zero, "both hubs closed");
    }

    [Test]
    public void SpawnWorksFromPlainThreadsPoolThreadsAndGreenletsOfAnyHub()
    {
        var hubs = new ConcurrentBag<Hub>();
        var fromPool = Task.Run(() => Group.Spawn(() => hubs.Add(Hub.Current)));
        Greenlet? fromThread = null;
        var t = new Thread(() => fromThread = Group.Spawn(() => hubs.Add(Hub.Current)));
        t.Start();
        var fromGreenlet = Group.SpawnOn(2, () => Group.SpawnOn(3, () => hubs.Add(Hub.Current)).Join(TimeSpan.FromSeconds(10)));
        var fromHere = Group.Spawn(() => hubs.Add(Hub.Current));
        Green.Wait(fromPool).Join(TimeSpan.FromSeconds(10));
        t.Join();
        fromThread!.Join(TimeSpan.FromSeconds(10));
        fromGreenlet.Join(TimeSpan.FromSeconds(10));
        fromHere.Join(TimeSpan.FromSeconds(10));
        Assert.That(hubs, Has.Count.EqualTo(4));
        Assert.That(hubs.All(h => Group.Hubs.Contains(h)), Is.True);
    }
}
