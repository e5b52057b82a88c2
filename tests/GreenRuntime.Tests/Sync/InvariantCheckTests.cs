using GreenRuntime.Sync;

namespace GreenRuntime.Tests.Sync;

/// <summary>
/// A primitive's DEBUG invariant check that fails under the primitive's lock throws its exception, and leaves the lock
/// free: before, the lock stayed held, and every later use of the primitive spun on it for good (five threads spinning on
/// a queue's lock that nobody held), so the broken invariant never showed. The failure is forced
/// (<c>SyncLock.FailNextCheck</c>: the next check made on the calling thread fails).
/// </summary>
/// <remarks>Every wait on a primitive is made on a background thread of its own, waited for within a bound: one that met
/// the lock held spun for good, and a greenlet of the test's hub doing so hung the hub's disposal instead of failing.</remarks>
public class InvariantCheckTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [SetUp]
    public void DebugOnly()
    {
        if (!SyncLock.ChecksInvariants) Assert.Ignore("Invariant checks exist in DEBUG builds only.");
    }

    [Test]
    public void AQueueWhosePutFailsItsCheckStaysUsable()
    {
        var q = new GreenQueue<int>();
        SyncLock.FailNextCheck();
        var e = Assert.Throws<InvalidOperationException>(() => q.Put(1));
        Assert.That(e!.Message, Does.Contain("Invariant Q1 broken"));
        int got = -1;
        OnAnotherThread(() =>
        {
            q.TryGet(out got); // the item was stored before the check
            q.Put(2);
        });
        Assert.That(got, Is.EqualTo(1));
        Assert.That(q.Get(TimeSpan.Zero), Is.EqualTo(2));
    }

    [Test]
    public void ASemaphoreWhoseReleaseFailsItsCheckStaysUsable()
    {
        // Release exits the lock in a finally: that Exit, owed by the frame the exception leaves, must not free the lock
        // a second time (it may be another thread's by then), nor be needed.
        var s = new GreenSemaphore(0);
        SyncLock.FailNextCheck();
        var e = Assert.Throws<InvalidOperationException>(() => s.Release());
        Assert.That(e!.Message, Does.Contain("Invariant S broken"));
        bool acquired = false;
        OnAnotherThread(() =>
        {
            acquired = s.TryAcquire();
            s.Release();
        });
        Assert.That(acquired, Is.True);
        Assert.That(s.Count, Is.EqualTo(1));
    }

    [Test]
    public void AnEventWhoseSetFailsAWaitersCheckStaysUsable()
    {
        var ev = new Event();
        bool waited = false;
        var waiter = Start(() => waited = ev.Wait(TimeSpan.FromSeconds(1)));
        Thread.Sleep(100); // parked on the event
        SyncLock.FailNextCheck();
        var e = Assert.Throws<InvalidOperationException>(() => ev.Set());
        Assert.That(e!.Message, Does.Contain("Invariant W broken"));
        OnAnotherThread(() =>
        {
            ev.Clear();
            ev.Set();
        });
        Assert.That(waiter.Join(Bound), Is.True, "the waiter met the event's lock held as its wait ended");
        Assert.That(waited, Is.True, "its wait ended by its timeout, and found the flag set");
    }

    [Test]
    public void AJoinableQueueWhoseEventFailsItsCheckInsideTheQueuesLockLeavesBothLocksFree()
    {
        // TaskDone sets the queue's Event with the queue's lock held: the check that fails is the Event's, under both.
        var q = new JoinableQueue<int>();
        q.Put(1);
        Assert.That(q.Get(TimeSpan.Zero), Is.EqualTo(1));
        var joiner = Start(() => q.Join(TimeSpan.FromSeconds(1)));
        Thread.Sleep(100); // parked on the Event
        SyncLock.FailNextCheck();
        var e = Assert.Throws<InvalidOperationException>(() => q.TaskDone());
        Assert.That(e!.Message, Does.Contain("Invariant W broken"));
        OnAnotherThread(() => q.Put(2)); // the queue's lock, then the Event's (Clear)
        Assert.That(q.UnfinishedTasks, Is.EqualTo(1));
        Assert.That(q.Get(TimeSpan.Zero), Is.EqualTo(2));
        Assert.That(joiner.Join(Bound), Is.True, "the joiner met the Event's lock held as its wait ended");
    }

    /// <summary>Runs <paramref name="use"/> on a thread of its own, which spins for good if a lock it needs stayed held:
    /// a background thread, waited for within a bound.</summary>
    private static void OnAnotherThread(Action use)
    {
        Exception? failure = null;
        var thread = Start(() =>
        {
            try
            {
                use();
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        Assert.That(thread.Join(Bound), Is.True, "the primitive's lock stayed held after the failed check");
        Assert.That(failure, Is.Null);
    }

    private static Thread Start(Action body)
    {
        var thread = new Thread(() => body()) { IsBackground = true };
        thread.Start();
        return thread;
    }
}
