namespace GreenRuntime.Tests.Timeouts;

/// <summary>
/// A GreenTimeout in a stackless greenlet reaches the waits begun inside its scope, as the scope's code flows through
/// its awaits, and none begun outside it: a fire-and-forget loop the greenlet started before the scope (a socket's read
/// loop, a queue consumer) is not ended by the timeout, as a thread's loop is not ended by a timeout of other code.
/// </summary>
public class StacklessTimeoutScopeTests : HubTest
{
    private static async Task Consume(GreenQueue<int> queue, List<int> received)
    {
        while (true)
        {
            int item = await queue.GetAsync();
            if (item < 0) return;
            received.Add(item);
        }
    }

    // The greenlet's body awaits its loop at the end: a stackless greenlet's waits end with it (its body's task).
    [Test]
    public void ATimeoutEndsTheWaitInsideItsScopeAndNotALoopStartedBeforeIt()
    {
        var queue = new GreenQueue<int>();
        var received = new List<int>();
        var scopeEnded = new Event();
        string? outcome = null;
        var g = Green.SpawnAsync(async () =>
        {
            var loop = Consume(queue, received); // detached: waits in GetAsync while the scope below runs
            using (var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(20)))
            {
                try
                {
                    await Green.SleepAsync(TimeSpan.FromSeconds(10));
                    outcome = "slept";
                }
                catch (GreenTimeoutException e) when (e.Scope == t)
                {
                    outcome = "timed out";
                }
            }
            scopeEnded.Set();
            await loop;
        });
        scopeEnded.Wait(TimeSpan.FromSeconds(5));
        Assert.That(outcome, Is.EqualTo("timed out"));
        queue.Put(1);
        queue.Put(2);
        queue.Put(-1);
        Assert.That(g.Join(TimeSpan.FromSeconds(5)), Is.True, "the loop went on consuming, to its end");
        Assert.That(g.Exception, Is.Null, "the loop outside the scope was ended");
        Assert.That(received, Is.EqualTo(new[] { 1, 2 }));
    }

    [Test]
    public void AnExpiredScopeRaisesAtItsOwnNextWaitOnlyNotInTheLoopOutsideIt()
    {
        var queue = new GreenQueue<int>();
        var received = new List<int>();
        string? outcome = null;
        var feeder = Green.Spawn(() =>
        {
            Green.Sleep(60); // the scope below has expired by now, while it awaits a foreign task
            queue.Put(1);
            queue.Put(2);
        });
        var g = Green.SpawnAsync(async () =>
        {
            var loop = Consume(queue, received);
            using (var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(20)))
            {
                try
                {
                    await Task.Delay(150); // not the runtime's: the timeout cannot end it, and expires meanwhile
                    await Green.SleepAsync(TimeSpan.FromSeconds(10)); // the scope's next wait raises at once
                    outcome = "slept";
                }
                catch (GreenTimeoutException e) when (e.Scope == t)
                {
                    outcome = "timed out";
                }
            }
            queue.Put(-1);
            await loop;
        });
        Assert.That(g.Join(TimeSpan.FromSeconds(5)), Is.True, "the greenlet ended");
        Assert.That(g.Exception, Is.Null, "the loop outside the scope was ended");
        Assert.That(outcome, Is.EqualTo("timed out"));
        Assert.That(received, Is.EqualTo(new[] { 1, 2 }));
        feeder.Join();
    }

    [Test]
    public void AWaitBegunInsideTheScopeIsEndedEvenFromAnotherAsyncMethod()
    {
        var queue = new GreenQueue<int>();
        var g = Green.SpawnAsync(async () =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            var inner = Task.Run(() => 0); // a foreign task: no scope of ours
            await inner;
            var get = GetLater(queue); // begun inside the scope, awaited later
            try
            {
                await get;
                return "got";
            }
            catch (GreenTimeoutException e) when (e.Scope == t)
            {
                return "timed out";
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("timed out"));

        static async Task<int> GetLater(GreenQueue<int> queue)
        {
            await Green.SleepAsync(TimeSpan.FromMilliseconds(1));
            return await queue.GetAsync();
        }
    }

    [Test]
    public void AKillStillEndsEveryWaitOfTheGreenlet()
    {
        var queue = new GreenQueue<int>();
        Task? loop = null;
        var g = Green.SpawnAsync(async () =>
        {
            loop = Consume(queue, []);
            await Green.SleepAsync(TimeSpan.FromSeconds(10));
        });
        Green.Sleep(10);
        g.Kill();
        Assert.That(loop!.IsFaulted, Is.True, "a kill ends the whole greenlet, its detached waits included");
        Assert.That(loop.Exception!.InnerException, Is.InstanceOf<GreenletExit>());
    }
}
