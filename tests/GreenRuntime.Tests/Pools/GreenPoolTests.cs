namespace GreenRuntime.Tests.Pools;

/// <summary>Behaviours of gevent's test__pool.py for GreenPool and GreenGroup.</summary>
public class GreenPoolTests : HubTest
{
    private sealed class MyException : Exception { }

    [Test]
    public void SpawnBeyondTheSizeBlocksUntilASlotFrees()
    {
        var pool = new GreenPool(2);
        var gate = new Event();
        var log = new List<string>();
        pool.Spawn(() => { gate.Wait(); log.Add("a done"); });
        pool.Spawn(() => { gate.Wait(); log.Add("b done"); });
        Assert.That(pool.FreeCount, Is.Zero);
        Assert.That(pool.IsFull, Is.True);
        Green.Spawn(() => { Green.Sleep(1); log.Add("releasing"); gate.Set(); });
        pool.Spawn(() => log.Add("c ran"));    // the third spawn blocks
        log.Add("c spawned");
        pool.Join();
        Assert.That(log.IndexOf("releasing"), Is.LessThan(log.IndexOf("c spawned")));
        Assert.That(log, Does.Contain("c ran"));
        Assert.That(pool.Count, Is.Zero);
        Assert.That(pool.FreeCount, Is.EqualTo(2));
    }

    [Test]
    public void NeverMoreThanSizeMembersRunAtOnceStackfulAndStackless()
    {
        var pool = new GreenPool(3);
        int running = 0, max = 0;
        for (int i = 0; i < 20; i++)
        {
            if (i % 2 == 0) pool.Spawn(() => { running++; max = Math.Max(max, running); Green.Sleep(20); running--; });
            else pool.SpawnAsync(async () => { running++; max = Math.Max(max, running); await Task.Delay(20); running--; });
        }
        Assert.That(pool.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(max, Is.EqualTo(3));
    }

    [Test]
    public void BlockedSpawnersGetSlotsInFifoOrder()
    {
        var pool = new GreenPool(1);
        var gate = new Event();
        pool.Spawn(() => gate.Wait());
        var order = new List<int>();
        var spawners = Enumerable.Range(0, 4).Select(i => Green.Spawn(() => pool.Spawn(() => order.Add(i)))).ToList();
        Green.Sleep(1);
        gate.Set();
        Green.JoinAll(spawners);
        pool.Join();
        Assert.That(order, Is.EqualTo(new[] { 0, 1, 2, 3 }));
    }

    [Test]
    public void NonBlockingAddThrowsPoolFullAndTryAddReturnsFalse()
    {
        var pool = new GreenPool(1);
        pool.Spawn(() => Green.Sleep(1000));
        var extra = new Greenlet(() => { });
        Assert.That(pool.TryAdd(extra), Is.False);
        Assert.Throws<PoolFullException>(() => pool.Add(extra, blocking: false));
        Assert.Throws<PoolFullException>(() => pool.Add(extra, blocking: true, timeout: TimeSpan.FromMilliseconds(2)));
        Assert.That(pool.Contains(extra), Is.False);
        pool.Kill();
        Assert.That(pool.WaitAvailable(TimeSpan.FromSeconds(1)), Is.EqualTo(1));
        Assert.That(pool.TryAdd(extra), Is.True);
        extra.Start();
        pool.Join();
    }

    [Test]
    public void MapKeepsInputOrderAndBoundsConcurrency()
    {
        var pool = new GreenPool(4);
        int running = 0, max = 0;
        var results = pool.Map(x =>
        {
            running++; max = Math.Max(max, running);
            Green.Sleep(20 + 2 * (10 - x));   // later inputs finish first; 20 ms lets all four start before any ends
            running--;
            return x * x;
        }, Enumerable.Range(0, 10));
        Assert.That(results, Is.EqualTo(Enumerable.Range(0, 10).Select(x => x * x)));
        Assert.That(max, Is.EqualTo(4));
    }

    [Test]
    public void MapWithStacklessWorkers()
    {
        var pool = new GreenPool(8);
        var results = pool.Map(async x => { await Task.Delay(1); return x + 1; }, Enumerable.Range(0, 50));
        Assert.That(results, Is.EqualTo(Enumerable.Range(1, 50)));
    }

    [Test]
    public void MapPropagatesTheFirstException()
    {
        var pool = new GreenPool(3);
        Assert.Throws<MyException>(() => pool.Map<int, int>(x => x == 3 ? throw new MyException() : x, Enumerable.Range(0, 6)));
    }

    [Test]
    public void IMapYieldsInInputOrderAndAFailureDoesNotStopTheOthers()
    {
        var pool = new GreenPool(5);
        var finished = new List<int>();
        var it = pool.IMap(x =>
        {
            Green.Sleep(5 - x);
            finished.Add(x);
            if (x == 1) throw new MyException();
            return x;
        }, Enumerable.Range(0, 5)).GetEnumerator();
        Assert.That(it.MoveNext() && it.Current == 0, Is.True);
        Assert.Throws<MyException>(() => it.MoveNext());
        pool.Join();
        Assert.That(finished.Order(), Is.EqualTo(Enumerable.Range(0, 5)), "every item ran despite the failure");
    }

    [Test]
    public void IMapUnorderedYieldsInCompletionOrder()
    {
        var pool = new GreenPool(4);
        var gates = Enumerable.Range(0, 4).Select(_ => new Event()).ToList();
        var finishOrder = new[] { 2, 0, 3, 1 };
        Green.Spawn(() => { foreach (var i in finishOrder) { Green.Sleep(1); gates[i].Set(); } });
        var results = pool.IMapUnordered(x => { gates[x].Wait(); return x; }, Enumerable.Range(0, 4)).ToList();
        Assert.That(results, Is.EqualTo(finishOrder));
    }

    [Test]
    public void IMapUnorderedMaxSizeBoundsResultsNotYetConsumed()
    {
        var pool = new GreenPool(10);
        int started = 0;
        var startedAtFirst = -1;
        foreach (var x in pool.IMapUnordered(x => { started++; return x; }, Enumerable.Range(0, 20), maxSize: 3))
        {
            if (startedAtFirst < 0) startedAtFirst = started;
            Green.Sleep(1);
        }
        Assert.That(startedAtFirst, Is.LessThanOrEqualTo(3));
        Assert.That(started, Is.EqualTo(20));
    }

    [Test]
    public void ApplyAndApplyAsync()
    {
        var pool = new GreenPool(1);
        Assert.That(pool.Apply(() => Green.Current.Name), Does.StartWith("Greenlet-"));
        Assert.That(pool.Spawn(() => pool.Apply(() => 5)).Get(), Is.EqualTo(5), "apply from a member runs inline instead of deadlocking");
        var got = new AsyncResult<int>();
        var g = pool.ApplyAsync(() => 6, got.Set);
        Assert.That(got.Get(), Is.EqualTo(6));
        Assert.That(g.Get(), Is.EqualTo(6));
    }

    [Test]
    public void StacklessGreenletUsesThePool()
    {
        var pool = new GreenPool(2);
        var outer = Green.SpawnAsync(async () =>
        {
            await Task.Yield();
            var squares = pool.Map(x => x * x, Enumerable.Range(0, 5));
            return squares.Sum();
        });
        Assert.That(outer.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(30));
    }

    [Test]
    public void GroupTracksMembersUntilTheyDie()
    {
        var group = new GreenGroup();
        var a = group.Spawn(() => Green.Sleep(2));
        var b = group.SpawnAsync(async () => { await Task.Delay(2); return 1; });
        var c = new Greenlet(() => { });
        group.Add(c);
        Assert.That(group.Count, Is.EqualTo(3));
        Assert.That(group.Contains(a) && group.Contains(b) && group.Contains(c), Is.True);
        group.Discard(c);
        Assert.That(group.Contains(c), Is.False);
        Assert.That(group.Join(TimeSpan.FromSeconds(5)), Is.True);
        Green.Sleep(0);
        Assert.That(group.Count, Is.Zero);
    }

    [Test]
    public void GroupJoinTimesOutAndRaiseErrorRethrows()
    {
        var group = new GreenGroup();
        group.Spawn(() => Green.Sleep(1000));
        Assert.That(group.Join(TimeSpan.FromMilliseconds(2)), Is.False);
        group.Kill();
        Assert.That(group.Join(TimeSpan.Zero), Is.True);
        group.Spawn(() => { Green.Sleep(1); throw new MyException(); });
        group.Spawn(() => Green.Sleep(1000));
        Assert.Throws<MyException>(() => group.Join(raiseError: true));
        group.Kill();
    }

    [Test]
    public void GroupKillKillsEveryMember()
    {
        var group = new GreenGroup();
        var gs = Enumerable.Range(0, 5).Select(i => i % 2 == 0 ? group.Spawn(() => Green.Sleep(10_000)) : group.SpawnAsync(async () => await new Event().WaitAsync())).ToList();
        Green.Sleep(0);
        group.Kill();
        Assert.That(gs.All(g => g.Dead), Is.True);
        Green.Sleep(0);
        Assert.That(group.Count, Is.Zero);
    }

    [Test]
    public void KilledSpawnerWaitingForASlotTakesNoSlot()
    {
        var pool = new GreenPool(1);
        pool.Spawn(() => Green.Sleep(5));
        var spawner = Green.Spawn(() => pool.Spawn(() => { }));
        Green.Sleep(0);
        spawner.Kill();
        pool.Join();
        // Join returns with the group empty, as gevent's does: on a loaded machine the member's 5 ms ran out first, the
        // spawner's member ended, and its removal (its death link) was still queued when Join returned (free 0).
        Assert.That(pool.Count, Is.Zero);
        Assert.That(pool.FreeCount, Is.EqualTo(1));
    }

    [Test]
    public void SpawnInMainOnAFullPoolWhoseMembersNeverFinishRaisesLoopExit()
    {
        var pool = new GreenPool(1);
        var never = new Event();
        pool.Spawn(() => never.Wait());
        Assert.Throws<LoopExitException>(() => pool.Spawn(() => { }));
        Assert.That(pool.Count, Is.EqualTo(1), "the refused spawn took no slot");
    }
}

/// <summary>gevent's Pool(None) and apply_async.</summary>
public class GreenPoolGeventDefaultsTests : HubTest
{
    [Test]
    public void ANullSizePoolIsUnbounded()
    {
        var pool = new GreenPool(null);
        Assert.That(pool.Size, Is.Null);
        Assert.That(pool.IsFull, Is.False);
        var members = Enumerable.Range(0, 500).Select(_ => pool.Spawn(() => Green.Sleep(10))).ToList();
        Assert.That(pool.Count, Is.EqualTo(500), "no spawn waited");
        pool.Join();
        Assert.That(members.All(g => g.Successful), Is.True);
        Assert.Throws<ArgumentOutOfRangeException>(() => new GreenPool(-1));
        var none = new GreenPool(0); // gevent: a pool that can never have a member
        Assert.That(none.TryAdd(new Greenlet(() => { })), Is.False);
        Assert.That(none.WaitAvailable(TimeSpan.FromMilliseconds(5)), Is.Zero);
    }

    [Test]
    public void ApplyAsyncNeverBlocksEvenOnAFullPool()
    {
        var pool = new GreenPool(1);
        var gate = new Event();
        var first = pool.ApplyAsync(() => { gate.Wait(); return 1; });
        Assert.That(pool.IsFull, Is.True);
        var results = new List<int>();
        var second = pool.ApplyAsync(() => 2, results.Add); // would block on a full pool: it must not
        Assert.That(second.Dead, Is.False);
        gate.Set();
        Assert.That(first.Get(), Is.EqualTo(1));
        Assert.That(second.Get(), Is.EqualTo(2));
        Assert.That(results, Is.EqualTo(new[] { 2 }));
    }
}
