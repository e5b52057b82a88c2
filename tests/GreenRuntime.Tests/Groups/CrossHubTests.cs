using System.Collections.Concurrent;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Groups;

/// <summary>Primitives, joins, kills and links used by greenlets of several hubs and plain threads at once.</summary>
public class CrossHubTests : GroupTest
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(20);

    [Test]
    public void EventWakesWaitersOfEveryHubAndThread()
    {
        var ev = new Event();
        var waiters = Enumerable.Range(0, 8).Select(i => i % 2 == 0
            ? Group.SpawnOn(i % 4, () => ev.Wait(Long))
            : Group.SpawnOnAsync(i % 4, async () => await ev.WaitAsync(Long))).ToList();
        var timingOut = Group.SpawnOn(1, () => ev.Wait(TimeSpan.FromMilliseconds(5)));
        var poolWaiter = Task.Run(() => ev.Wait(Long));
        Assert.That(timingOut.Get(Long), Is.False, "a waiter of another hub times out");
        WaitUntil(() => waiters.All(g => g.State is GreenletState.Parked or GreenletState.Awaiting), "everyone waits");
        new Thread(ev.Set).Start(); // set from a plain thread
        Assert.That(ev.Wait(Long), Is.True);
        foreach (var g in waiters) Assert.That(g.Get(Long), Is.True);
        Assert.That(Green.Wait(poolWaiter), Is.True);
    }

    [Test]
    public void APutterWhoseTimeoutFiredAsAnotherHubTookItsItemReportsThePutDone([Values] bool queue)
    {
        // P's GreenTimeout fires on hub 0 (P is Ready with it, not yet running) while a getter on hub 1 takes P's item.
        // On one hub the put would count as done (a timeout waits while its greenlet holds a value it has not seen);
        // across hubs it must too, or a sender that retries after "timed out" delivers the item twice.
        var channel = new GreenChannel<int>();
        var full = new GreenQueue<int>(1);
        full.Put(0);
        bool go = false, got = false;
        int received = -1;
        var putter = Group.SpawnOn(0, () =>
        {
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(10));
            // Runs on hub 0 right after the expiry made P Ready, before P can run: hub 1 takes the item meanwhile.
            timeout.Token.Register(() =>
            {
                Volatile.Write(ref go, true);
                while (!Volatile.Read(ref got)) Thread.SpinWait(10);
            });
            try
            {
                if (queue) full.Put(42);
                else channel.Put(42);
                return true;
            }
            catch (GreenTimeoutException)
            {
                return false;
            }
        });
        var getter = Group.SpawnOn(1, () =>
        {
            while (!Volatile.Read(ref go)) Thread.SpinWait(10);
            if (queue)
            {
                full.Get(Long); // frees the slot: the waiting putter's item moves in
                received = full.Get(Long);
            }
            else
            {
                received = channel.Get(Long);
            }
            Volatile.Write(ref got, true);
        });
        Assert.That(getter.Join(Long), Is.True);
        Assert.That(received, Is.EqualTo(42));
        Assert.That(putter.Get(Long), Is.True, "the put took effect, so it did not time out");
    }

    [Test]
    public void AsyncResultIsSetOnOneHubAndReadOnAllOthers()
    {
        var r = new AsyncResult<string>();
        var readers = Enumerable.Range(0, 4).Select(i => Group.SpawnOn(i, () => r.Get(Long))).ToList();
        var asyncReaders = Enumerable.Range(0, 4).Select(i => Group.SpawnOnAsync(i, async () => await r.GetAsync(Long))).ToList();
        Group.SpawnOn(2, () => { Green.Sleep(10); r.Set("done"); });
        Assert.That(readers.Concat(asyncReaders).Select(g => g.Get(Long)), Is.All.EqualTo("done"));
        Assert.That(r.Get(), Is.EqualTo("done"), "and on the test's own hub");
        var failed = new AsyncResult<int>();
        var reader = Group.SpawnOn(3, () => failed.Get(Long));
        new Thread(() => failed.SetException(new FormatException("bad"))).Start();
        Assert.Throws<FormatException>(() => reader.Get(Long));
    }

    [Test]
    public void ChannelHandsEveryItemOverExactlyOnceAcrossHubs()
    {
        var ch = new GreenChannel<int>();
        const int n = 2000;
        var putters = Enumerable.Range(0, 2).Select(p => Group.SpawnOn(p, () => { for (int i = p; i < n; i += 2) ch.Put(i); })).ToList();
        var got = new ConcurrentBag<int>();
        var getters = Enumerable.Range(0, 2).Select(c => Group.SpawnOnAsync(2 + c, async () =>
        {
            for (int i = 0; i < n / 2; i++) got.Add(c == 0 ? ch.Get(Long) : await ch.GetAsync(Long));
        })).ToList();
        Green.JoinAll(putters.Concat(getters), Long, raiseError: true);
        Assert.That(got.Order(), Is.EqualTo(Enumerable.Range(0, n)));
    }

    [Test]
    public void SemaphoreExcludesAcrossHubs()
    {
        var s = new GreenSemaphore(1);
        int inside = 0, maxInside = 0;
        long total = 0;
        var workers = Enumerable.Range(0, 8).Select(i => Group.SpawnOnAsync(i % 4, async () =>
        {
            for (int k = 0; k < 300; k++)
            {
                if (i % 2 == 0) s.Acquire(Long);
                else await s.AcquireAsync(Long);
                int now = Interlocked.Increment(ref inside);
                if (now > maxInside) maxInside = now;
                total++; // not atomic: correct only under mutual exclusion
                if (k % 50 == 0) Green.Sleep(0);
                Interlocked.Decrement(ref inside);
                s.Release();
            }
        })).ToList();
        Green.JoinAll(workers, Long, raiseError: true);
        Assert.That(maxInside, Is.EqualTo(1));
        Assert.That(total, Is.EqualTo(8 * 300));
        Assert.That(s.Count, Is.EqualTo(1));
    }

    [Test]
    public void QueueVariantsAndJoinableQueueAcrossHubs()
    {
        var jq = new JoinableQueue<int>();
        int processed = 0;
        var workers = Enumerable.Range(0, 4).Select(i => Group.SpawnOn(i, () =>
        {
            foreach (var _ in jq) { Interlocked.Increment(ref processed); jq.TaskDone(); }
        })).ToList();
        var producers = Enumerable.Range(0, 4).Select(i => Group.SpawnOn(i, () => { for (int k = 0; k < 250; k++) jq.Put(k); })).ToList();
        Green.JoinAll(producers, Long);
        Assert.That(jq.Join(Long), Is.True);
        Assert.That(processed, Is.EqualTo(1000));
        jq.Close();
        Green.JoinAll(workers, Long);
        Assert.That(workers.All(w => w.Successful), Is.True);

        var pq = new GreenPriorityQueue<int>();
        var lifo = new LifoQueue<int>(maxSize: 1);
        var fromPq = Group.SpawnOn(1, () => Enumerable.Range(0, 3).Select(_ => pq.Get(Long)).ToList());
        Group.SpawnOn(2, () => { pq.Put(3); pq.Put(1); pq.Put(2); }).Join(Long);
        Assert.That(fromPq.Get(Long), Has.Count.EqualTo(3).And.Contains(1).And.Contains(2).And.Contains(3));
        lifo.Put(1);
        var blockedPut = Group.SpawnOn(3, () => lifo.Put(2, Long)); // full: waits on another hub
        WaitUntil(() => blockedPut.State == GreenletState.Parked, "the putter waits");
        Assert.That(Group.SpawnOn(0, () => lifo.Get(Long)).Get(Long), Is.EqualTo(1));
        blockedPut.Join(Long);
        Assert.That(lifo.Get(Long), Is.EqualTo(2));
    }

    [Test]
    public void QueueClosedFromAThreadEndsGettersOfEveryHub()
    {
        var q = new GreenQueue<int>();
        var getters = Enumerable.Range(0, 4).Select(i => Group.SpawnOn(i, () => q.Count(_ => true))).ToList();
        q.Put(1);
        q.Put(2);
        WaitUntil(() => getters.All(g => g.State == GreenletState.Parked), "the getters wait");
        new Thread(q.Close).Start();
        Assert.That(getters.Sum(g => (int)g.Get(Long)!), Is.EqualTo(2));
    }

    [Test]
    public void StressOneQueueFourHubsAndAPlainThreadNothingLostOrDuplicated()
    {
        const int total = 100_000, producers = 8, each = total / producers;
        var q = new GreenQueue<int>(maxSize: 64); // bounded: putters block and are served across hubs too
        var seen = new int[total];
        int consumed = 0;
        void Record(int item)
        {
            Interlocked.Increment(ref seen[item]);
            Interlocked.Increment(ref consumed);
        }
        // Producers: seven greenlets spread over the hubs (sync and async puts), one plain thread.
        var producerGreenlets = Enumerable.Range(0, producers - 1).Select(p => Group.SpawnOnAsync(p % 4, async () =>
        {
            for (int i = p * each; i < (p + 1) * each; i++)
            {
                if (p % 2 == 0) q.Put(i);
                else await q.PutAsync(i);
            }
        })).ToList();
        var producerThread = new Thread(() => { for (int i = (producers - 1) * each; i < total; i++) q.Put(i); });
        producerThread.Start();
        // Consumers: blocking, async, and short-timeout ones (their timeouts race puts from other hubs) on every hub, plus a plain thread.
        var consumers = new List<Greenlet>();
        for (int c = 0; c < 8; c++)
        {
            int kind = c % 3;
            consumers.Add(Group.SpawnOnAsync(c % 4, async () =>
            {
                while (true)
                {
                    try
                    {
                        int item = kind switch
                        {
                            0 => q.Get(),
                            1 => await q.GetAsync(),
                            _ => q.Get(TimeSpan.FromMilliseconds(1)),
                        };
                        Record(item);
                    }
                    catch (QueueEmptyException e) when (!e.IsClosed)
                    {
                        // timed out: try again
                    }
                    catch (QueueEmptyException)
                    {
                        return; // closed and empty
                    }
                }
            }));
        }
        var consumerThread = new Thread(() =>
        {
            try { foreach (var item in q) Record(item); }
            catch (Exception e) { Console.WriteLine(e); }
        });
        consumerThread.Start();
        // Victims: getters killed from another hub while they wait; an item handed to one just before the kill goes back.
        var killers = Group.SpawnOn(0, () =>
        {
            for (int v = 0; v < 200; v++)
            {
                var victim = Group.SpawnOn(1 + v % 3, () => { Record(q.Get()); Record(q.Get()); });
                Green.Sleep(0);
                victim.Kill(block: true, timeout: Long);
            }
        });
        Green.JoinAll(producerGreenlets.Append(killers), TimeSpan.FromSeconds(120), raiseError: true);
        producerThread.Join();
        WaitUntil(() => Volatile.Read(ref consumed) == total, "every item is consumed");
        q.Close();
        Green.JoinAll(consumers, Long, raiseError: true);
        consumerThread.Join();
        Assert.That(consumed, Is.EqualTo(total));
        Assert.That(seen.Count(x => x != 1), Is.Zero, "every item exactly once");
        Assert.That(q.Count, Is.Zero);
    }

    [Test]
    public void JoinGetKillAndLinksAcrossHubs()
    {
        // Join and Get a greenlet of hub 1 from a greenlet of hub 0 (cooperatively: hub 0 keeps running others).
        var slow = Group.SpawnOn(1, () => { Green.Sleep(30); return 7; });
        int ticks = 0;
        var ticker = Group.SpawnOn(0, () => { while (true) { ticks++; Green.Sleep(1); } });
        var joiner = Group.SpawnOn(0, () => slow.Get(Long));
        Assert.That(joiner.Get(Long), Is.EqualTo(7));
        Assert.That(ticks, Is.GreaterThan(1), "hub 0 ran its other greenlets while one of them joined");
        Assert.That(Group.SpawnOn(0, () => Group.SpawnOn(1, () => Green.Sleep(1000)).Join(TimeSpan.FromMilliseconds(20))).Get(Long), Is.False, "a join of another hub times out");

        // Kill a greenlet of hub 2 from hub 3, blocking until it died; its finally ran on its own hub.
        Hub? unwoundOn = null;
        var victim = Group.SpawnOn(2, () => { try { Green.Sleep(TimeSpan.FromHours(1)); } finally { unwoundOn = Hub.Current; } });
        WaitUntil(() => victim.State == GreenletState.Parked, "the victim sleeps");
        Group.SpawnOn(3, () => victim.Kill(block: true, timeout: Long)).Join(Long);
        Assert.That(victim.Dead && victim.Value is GreenletExit, Is.True);
        Assert.That(unwoundOn, Is.SameAs(Group.Hubs[2]));

        // Links registered from another hub run on the linked greenlet's hub; JoinAll mixes hubs; await from another hub.
        var linkedOn = new AsyncResult<Hub>();
        var target = Group.SpawnOn(1, () => Green.Sleep(20));
        Group.SpawnOn(0, () => target.Link(_ => linkedOn.Set(Hub.Current))).Join(Long);
        Assert.That(linkedOn.Get(Long), Is.SameAs(Group.Hubs[1]));
        var mixed = Enumerable.Range(0, 4).Select(i => Group.SpawnOn(i, () => Green.Sleep(5 * (4 - i)))).ToList();
        var done = Group.SpawnOn(0, () => Green.JoinAll(mixed, Long)).Get(Long);
        Assert.That(done, Has.Count.EqualTo(4));
        Assert.That(Group.SpawnOnAsync(2, async () => await Group.SpawnOn(3, () => 5)).Get(Long), Is.EqualTo(5));
        // From the test's own hub (a plain thread with a hub) and from a pool thread.
        Assert.That(Group.Spawn(() => "x").Get(Long), Is.EqualTo("x"));
        Assert.That(Green.Wait(Task.Run(() => Group.Spawn(() => "y").Get(Long))), Is.EqualTo("y"));
        ticker.Kill();
    }

    [Test]
    public void AMainGreenletWaitingForAGroupGreenletIsNotALoopExit()
    {
        var q = new GreenQueue<int>();
        Group.Spawn(() => { Green.Sleep(30); q.Put(9); });
        Assert.That(q.Get(), Is.EqualTo(9), "the test's hub has nothing else to run, but another hub fills the queue");
    }

    [Test]
    public void AKilledGetterOfAnotherHubGivesItsItemBack()
    {
        // Race a put from hub 1 against a kill from hub 2 on getters of hub 0, many times: every item ends up taken once.
        var q = new GreenQueue<int>();
        int taken = 0;
        for (int round = 0; round < 300; round++)
        {
            var getter = Group.SpawnOn(0, () => { q.Get(Long); Interlocked.Increment(ref taken); });
            WaitUntil(() => getter.State == GreenletState.Parked || getter.Dead, "the getter waits (or took an item given back earlier)");
            var put = Group.SpawnOn(1, () => q.Put(round));
            var kill = Group.SpawnOn(2, () => getter.Kill(block: true, timeout: Long));
            Green.JoinAll([put, kill, getter], Long);
        }
        Assert.That(taken + q.Count, Is.EqualTo(300));
    }
    [Test]
    public void APoolAndAGroupSharedByEveryHubKeepTheirCountsAndTheirLimit()
    {
        // One pool as the limit on the jobs of every hub, one group to join them all: members are spawned, and die, on
        // four hubs at once. Unguarded, the member set broke (a count of -4, the collections' own exceptions).
        var pool = new GreenPool(8);
        var group = new GreenGroup();
        int ran = 0, running = 0, mostRunning = 0;
        var spawners = Enumerable.Range(0, 8).Select(i => Group.SpawnOn(i % 4, () =>
        {
            for (int k = 0; k < 1500; k++)
            {
                int n = k;
                pool.Spawn(() =>
                {
                    int now = Interlocked.Increment(ref running);
                    int most;
                    while (now > (most = Volatile.Read(ref mostRunning)) && Interlocked.CompareExchange(ref mostRunning, now, most) != most) { }
                    if (n % 5 == 0) Green.Sleep(0);
                    Interlocked.Decrement(ref running);
                    Interlocked.Increment(ref ran);
                });
                group.Spawn(() => Interlocked.Increment(ref ran));
                if (n % 50 == 0) group.Add(Green.Spawn(() => Green.Sleep(1)));
            }
        })).ToList();
        foreach (var s in spawners) Assert.That(s.Get(Long) is null && s.Successful, Is.True, $"{s.Exception}");
        Assert.That(pool.Join(Long) && group.Join(Long), Is.True);
        WaitUntil(() => pool.Count == 0 && group.Count == 0, "every member has left");
        Assert.That(ran, Is.EqualTo(8 * 1500 * 2));
        Assert.That(mostRunning, Is.LessThanOrEqualTo(8), "the pool's size held across hubs");
        Assert.That(pool.FreeCount, Is.EqualTo(8));
    }
}
