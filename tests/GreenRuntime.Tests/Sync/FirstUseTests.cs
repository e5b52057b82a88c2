namespace GreenRuntime.Tests.Sync;

/// <summary>
/// Every primitive and Green.* call works as the first thing a thread does (the thread gets its hub lazily), and a
/// primitive used on one thread wakes its waiters when signalled from another (thread pool, another hub).
/// </summary>
public class FirstUseTests
{
    /// <summary>Runs <paramref name="body"/> on a fresh thread with no hub, disposing the hub it got, and rethrows its failure.</summary>
    private static void OnFreshThread(Action body)
    {
        Exception? failure = null;
        var t = new Thread(() =>
        {
            try
            {
                body();
            }
            catch (Exception e)
            {
                failure = e;
            }
            finally
            {
                Hub.CurrentOrNull?.Dispose();
            }
        });
        t.Start();
        Assert.That(t.Join(TimeSpan.FromSeconds(30)), Is.True, "the thread finished");
        if (failure != null) throw new AssertionException("failed on the fresh thread: " + failure);
    }

    [Test]
    public void EventWaitWithATimeoutIsTheFirstStatementOfAThread()
    {
        bool result = true;
        OnFreshThread(() => result = new Event().Wait(TimeSpan.FromMilliseconds(10)));
        Assert.That(result, Is.False);
    }

    [Test]
    public void EachPrimitiveWorksAsTheFirstThingAThreadDoes()
    {
        OnFreshThread(() => Assert.That(new AsyncResult<int>().Wait(TimeSpan.FromMilliseconds(5)), Is.False));
        OnFreshThread(() => Assert.That(new GreenSemaphore(0).Acquire(TimeSpan.FromMilliseconds(5)), Is.False));
        OnFreshThread(() => Assert.Throws<QueueEmptyException>(() => new GreenQueue<int>().Get(TimeSpan.FromMilliseconds(5))));
        OnFreshThread(() => Assert.Throws<QueueEmptyException>(() => new GreenChannel<int>().Get(TimeSpan.FromMilliseconds(5))));
        OnFreshThread(() => Assert.That(new JoinableQueue<int>().Join(TimeSpan.FromMilliseconds(5)), Is.True));
        OnFreshThread(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(5));
            Assert.Throws<GreenTimeoutException>(() => Green.Sleep(1000));
        });
        OnFreshThread(() => Assert.That(Green.Spawn(() => 7).Get(), Is.EqualTo(7)));
    }

    [Test]
    public void APrimitiveCreatedOffAnyHubAndSetFromThePoolBeforeAnyWaitStillWakesTheWaiter()
    {
        OnFreshThread(() =>
        {
            var ev = new Event();         // no hub yet on this thread
            Task.Run(() => ev.Set()).Wait(); // signalled first, from a pool thread: queued until a hub binds it
            Assert.That(ev.Wait(TimeSpan.FromSeconds(5)), Is.True);
            var sem = new GreenSemaphore(0);
            Task.Run(sem.Release).Wait();
            Assert.That(sem.Acquire(TimeSpan.FromSeconds(5)), Is.True);
        });
    }

    [Test]
    public void APrimitiveFirstUsedOnOneThreadIsSignalledFromThePoolAndFromAnotherHub()
    {
        OnFreshThread(() =>
        {
            var ev = new Event();
            var fromPool = Green.Spawn(() => ev.Wait(TimeSpan.FromSeconds(10)));
            Green.Sleep(1); // the waiter binds the event to this thread's hub
            Task.Run(() => { Thread.Sleep(20); ev.Set(); });
            Assert.That(fromPool.Get(), Is.True);

            var q = new GreenQueue<int>();
            var getter = Green.Spawn(() => q.Get(TimeSpan.FromSeconds(10)));
            Green.Sleep(1);
            var other = new Thread(() =>
            {
                using var otherHub = new Hub();
                Green.Sleep(10);
                q.Put(42); // another hub: marshalled to the queue's hub
            });
            other.Start();
            Assert.That(getter.Get(), Is.EqualTo(42));
            other.Join();
        });
    }
}
