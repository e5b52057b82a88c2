namespace GreenRuntime.Tests.Core;

/// <summary>LoopExit and Green.Wait.</summary>
public class LoopExitAndWaitTests : HubTest
{
    [Test]
    public void AHubThatABlockingCallLeftOnAPoolThreadDoesNotHideLaterDeadlocks()
    {
        Hub.Dispose(); // the fixture's hub, on this live thread, could end the wait below: it must not count
        Task.Run(() => Green.Sleep(1)).Wait(); // binds a hub to a pool thread, which lives on in the pool
        bool reported = false;
        var thread = new Thread(() =>
        {
            using var hub = new Hub();
            try
            {
                new Event().Wait(); // nothing can ever set it
            }
            catch (LoopExitException)
            {
                reported = true;
            }
        }) { IsBackground = true };
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True, "the wait ended instead of hanging");
        Assert.That(reported, Is.True);
    }

    [Test]
    public void ALoopExitOverAWaitOnAPrimitiveSaysHowToWaitForASignalFromAPlainThread()
    {
        // A library's callback thread will put into the queue, which the hub cannot know: the message says what to do.
        var inbox = new GreenQueue<string>();
        var worker = Green.Spawn(() => inbox.Get());
        var e = Assert.Throws<LoopExitException>(() => worker.Join());
        Assert.That(e!.Message, Does.Contain("waits on a primitive (Queue)").And.Contain("KeepAlive()").And.Contain("wait with a timeout"));
        worker.Kill();
        var waiting = Green.Spawn(() => inbox.Get(TimeSpan.FromSeconds(10))); // the advice: a pending timeout
        new Thread(() =>
        {
            Thread.Sleep(50);
            inbox.Put("from a plain thread");
        }).Start();
        Assert.That(waiting.Get(TimeSpan.FromSeconds(10)), Is.EqualTo("from a plain thread"));
    }

    [Test]
    public void AKeepAliveLetsAWaitWithoutTimeoutGetItsSignalFromAPlainThread()
    {
        // A message broker's consumer callback, say: the first message comes later, from a thread the hub cannot see.
        var inbox = new GreenQueue<string>();
        var received = new Event();
        using (Hub.KeepAlive())
        {
            new Thread(() =>
            {
                Thread.Sleep(100);
                inbox.Put("first message");
                Thread.Sleep(100);
                received.Set();
            }).Start();
            Assert.That(inbox.Get(), Is.EqualTo("first message"));
            received.Wait();
        }
        // Closed: a wait nothing can end is reported again.
        var e = Assert.Throws<LoopExitException>(() => inbox.Get());
        Assert.That(e!.Message, Does.Contain("would block forever"));
    }

    [Test]
    public void AKeepAliveDisposedFromAPlainThreadEndsWhenItsPostArrives()
    {
        var scope = Hub.KeepAlive();
        var signal = new Event();
        new Thread(() =>
        {
            Thread.Sleep(50);
            scope.Dispose(); // from a thread with no hub: posted to the hub
            scope.Dispose(); // twice: nothing more
        }).Start();
        var e = Assert.Throws<LoopExitException>(() => signal.Wait());
        Assert.That(e!.Message, Does.Contain("would block forever"), "reported once the scope's end arrived");
        var hub = Hub;
        var offHub = Task.Run(() => hub.KeepAlive());
        Assert.That(() => offHub.GetAwaiter().GetResult(), Throws.InvalidOperationException, "only the hub's own greenlets open one");
    }

    [Test]
    public void JoiningAGreenletThatCanNeverFinishRaisesLoopExit()
    {
        var stuck = Green.Spawn(() => Hub.Park(WaitReason.Event)); // parked with no waker at all
        Green.Sleep(0);
        var e = Assert.Throws<LoopExitException>(() => stuck.Join());
        Assert.That(e!.Message, Does.Contain("would block forever"));
        stuck.Kill();
        Assert.That(stuck.Dead, Is.True);
    }

    [Test]
    public void TheMainGreenletBlockingAloneRaisesLoopExit() =>
        Assert.Throws<LoopExitException>(() => Hub.Park(WaitReason.Event));

    [Test]
    public void LoopExitIsNotRaisedWhileATaskIsOutstanding()
    {
        var task = Task.Delay(30).ContinueWith(_ => 5);
        Assert.That(Green.Wait(task), Is.EqualTo(5));
    }

    [Test]
    public void WaitParksOnlyTheCallingGreenlet()
    {
        var tcs = new TaskCompletionSource<int>();
        var progress = 0;
        var waiter = Green.Spawn(() => Green.Wait(tcs.Task));
        var worker = Green.Spawn(() =>
        {
            for (int i = 0; i < 5; i++) { progress++; Green.Sleep(1); }
            Task.Run(() => tcs.SetResult(11));
        });
        Assert.That(waiter.Get(), Is.EqualTo(11));
        Assert.That(progress, Is.EqualTo(5));
        worker.Join();
    }

    [Test]
    public void WaitRethrowsTheTaskExceptionUnwrapped()
    {
        var task = Task.Run(() => throw new FormatException("bad"));
        Assert.Throws<FormatException>(() => Green.Wait(task));
    }

    [Test]
    public void WaitTimesOut()
    {
        var never = new TaskCompletionSource().Task;
        Assert.Throws<TimeoutException>(() => Green.Wait(never, TimeSpan.FromMilliseconds(20)));
    }

    [Test]
    public void WaitOnValueTasks()
    {
        Assert.That(Green.Wait(new ValueTask<int>(3)), Is.EqualTo(3));
        Assert.That(Green.Wait(new ValueTask<int>(Task.Delay(5).ContinueWith(_ => 4))), Is.EqualTo(4));
        Green.Wait(new ValueTask(Task.Delay(5)));
    }

    [Test]
    public void WaitOffAHubIsAPlainBlockingWait()
    {
        int result = 0;
        var t = new Thread(() => result = Green.Wait(Task.Delay(10).ContinueWith(_ => 8)));
        t.Start();
        t.Join();
        Assert.That(result, Is.EqualTo(8));
    }

    [Test]
    public void ATaskCompletedByAnotherGreenletWakesTheWaiter()
    {
        var tcs = new TaskCompletionSource<string>();
        var waiter = Green.Spawn(() => Green.Wait(tcs.Task));
        var setter = Green.Spawn(() => tcs.SetResult("same hub"));
        Assert.That(waiter.Get(), Is.EqualTo("same hub"));
        setter.Join();
    }
}
