using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.LowLevel;

public class ParkingTests : HubTest
{
    [Test]
    public void AParkEndsWithTheValueItsWakerPassedAndOthersRunMeanwhile()
    {
        var order = new List<string>();
        ParkToken? waiter = null;
        var parked = Green.Spawn(() =>
        {
            var token = Parking.BeginPark(WaitReason.Event);
            waiter = token;
            order.Add("parked");
            order.Add("woken with " + Parking.EndPark(token));
        });
        Green.Spawn(() =>
        {
            order.Add("waker runs");
            Assert.That(waiter!.Value.IsPending, Is.True);
            Assert.That(waiter.Value.TryWake("hello"), Is.True);
            Assert.That(waiter.Value.IsPending, Is.False);
        });
        parked.Join();
        Assert.That(order, Is.EqualTo(new[] { "parked", "waker runs", "woken with hello" }));
    }

    [Test]
    public void NoOperationMayParkWhileAParksWakersAreRegistered()
    {
        // Between BeginPark and EndPark the greenlet is already parked as far as the hub knows: a cooperative call made
        // there (a registration that sleeps or takes a contended lock) must block the thread as the original, not begin
        // a second park over the first.
        Hub? beforePark = null, insidePark = null, afterPark = null;
        bool canParkInside = true;
        var g = Green.Spawn(() =>
        {
            beforePark = Parking.ParkingHub();
            var token = Parking.BeginPark(WaitReason.Other);
            insidePark = Parking.ParkingHub();
            canParkInside = Parking.CanPark;
            token.TryWake("woken by its own registration");
            var value = Parking.EndPark(token);
            afterPark = Parking.ParkingHub();
            return value;
        });
        Assert.That(g.Get(), Is.EqualTo("woken by its own registration"));
        Assert.That(beforePark, Is.SameAs(Hub));
        Assert.That(insidePark, Is.Null);
        Assert.That(canParkInside, Is.False);
        Assert.That(afterPark, Is.SameAs(Hub));
    }

    [Test]
    public void EveryParkHasExactlyOneWake()
    {
        ParkToken token = default;
        var g = Green.Spawn(() =>
        {
            token = Parking.BeginPark(WaitReason.Other);
            Parking.EndPark(token);
        });
        Green.Sleep(0);
        Assert.That(token.TryWake(1), Is.True);
        Assert.That(token.TryWake(2), Is.False, "the second waker loses the race and is told so");
        var e = Assert.Throws<InvalidOperationException>(() => token.Wake(3));
        Assert.That(e!.Message, Does.Contain("exactly one wake"));
        g.Join();
        Assert.That(g.Successful, Is.True);
        Assert.That(token.TryWake(4), Is.False, "a token names one park, not the greenlet's later parks");
    }

    [Test]
    public void PostWakeResumesTheParkFromAnotherThread()
    {
        var value = Parking.Park(WaitReason.Other, token =>
            Task.Run(() => { Thread.Sleep(20); token.PostWake("from the pool"); }), foreignWake: true);
        Assert.That(value, Is.EqualTo("from the pool"));
    }

    [Test]
    public void AParkNothingCanWakeIsReportedAsLoopExitUnlessAForeignWakeIsExpected()
    {
        Assert.That(() => Parking.EndPark(Parking.BeginPark(WaitReason.Other)), Throws.TypeOf<LoopExitException>());
        var token = Parking.BeginPark(WaitReason.Other, foreignWake: true);
        ThreadPool.QueueUserWorkItem(_ => { Thread.Sleep(20); token.PostWake("late"); });
        Assert.That(Parking.EndPark(token), Is.EqualTo("late"));
    }

    [Test]
    public void AnErrorPassedByTheWakerIsThrownFromEndPark()
    {
        var g = Green.Spawn(() => Parking.Park(WaitReason.Other, token =>
            Green.Spawn(() => token.TryWakeWithError(new TimeoutException("the waker's error")))));
        g.Join();
        Assert.That(g.Exception, Is.TypeOf<TimeoutException>().With.Message.EqualTo("the waker's error"));
    }

    [Test]
    public void EndParkWithATimeoutReturnsTimedOut()
    {
        var g = Green.Spawn(() => Parking.EndPark(Parking.BeginPark(WaitReason.Other), TimeSpan.FromMilliseconds(20)));
        Assert.That(g.Get(TimeSpan.FromSeconds(10)), Is.SameAs(Parking.TimedOut));
    }

    [Test]
    public void AKillEndsAParkAndTheTokenIsDeadAfterwards()
    {
        ParkToken token = default;
        var g = Green.Spawn(() =>
        {
            token = Parking.BeginPark(WaitReason.Other);
            Parking.EndPark(token);
        });
        Green.Sleep(0);
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(token.IsPending, Is.False);
        Assert.That(token.TryWake(), Is.False);
    }

    [Test]
    public void ParkingInAHubCallbackIsRefusedWithAClearMessage()
    {
        Exception? error = null;
        Hub.Post(() =>
        {
            Assert.That(Parking.ParkingHubSilent(), Is.Null);
            Assert.That(Parking.CanPark, Is.False);
            try
            {
                Parking.BeginPark(WaitReason.Other);
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        Green.Sleep(10);
        Assert.That(error, Is.TypeOf<InvalidOperationException>().With.Message.Contains("must not block"));
    }

    [Test]
    public void OnlyTheGreenletThatBeganAParkMayEndIt()
    {
        ParkToken token = default;
        var g = Green.Spawn(() =>
        {
            token = Parking.BeginPark(WaitReason.Other);
            Parking.EndPark(token);
        });
        Green.Sleep(0);
        var e = Assert.Throws<InvalidOperationException>(() => Parking.EndPark(token));
        Assert.That(e!.Message, Does.Contain("greenlet that began the park"));
        Assert.That(token.IsPending, Is.True, "the refused call changed nothing");
        token.Wake();
        g.Join();
        Assert.That(g.Successful, Is.True);
    }

    [Test]
    public void ASecondParkBeforeTheFirstEndedIsRefused()
    {
        var g = Green.Spawn(() =>
        {
            var token = Parking.BeginPark(WaitReason.Other);
            var e = Assert.Throws<InvalidOperationException>(() => Parking.BeginPark(WaitReason.Other));
            Assert.That(e!.Message, Does.Contain("has not ended"));
            Parking.CancelPark(token);
            Assert.That(token.IsPending, Is.False);
            Green.Sleep(1); // the greenlet parks normally again afterwards
        });
        g.Join();
        Assert.That(g.Successful, Is.True, g.Exception?.ToString());
    }

    /// <summary>A registration that hands the token to a waker which fires at once, and then fails: Park cancels the park
    /// that was already woken. Its resume stayed queued, and the scheduler took it for the greenlet's next park, which
    /// returned at once with no value and before its waker ran; once the greenlet had ended, it named no carrier, and the
    /// scheduler failed after giving the baton away (a NullReferenceException in the hand-off; greenlet code running
    /// without the baton, Invariant 1).</summary>
    [Test]
    public void AParkCancelledAfterItsWakeLeavesNoResumeForTheNextPark()
    {
        var order = new List<string>();
        var g = Green.Spawn(() =>
        {
            var e = Assert.Throws<InvalidOperationException>(() => Parking.Park(WaitReason.Other, token =>
            {
                Assert.That(token.TryWake("early"), Is.True);
                throw new InvalidOperationException("registration failed");
            }));
            Assert.That(e!.Message, Is.EqualTo("registration failed"));
            var next = Parking.BeginPark(WaitReason.Event);
            Green.Spawn(() =>
            {
                order.Add("waker");
                Assert.That(next.TryWake("its own"), Is.True);
            });
            order.Add("woken with " + (Parking.EndPark(next) ?? "nothing"));
        });
        g.Join();
        Assert.That(g.Successful, Is.True, g.Exception?.ToString());
        Assert.That(order, Is.EqualTo(new[] { "waker", "woken with its own" }));
        // The greenlet is dead now: nothing of its parks is left for the scheduler to resume.
        Assert.That(Green.Spawn(() => Green.Sleep(1)).Join(TimeSpan.FromSeconds(10)), Is.True);
    }

    [Test]
    public void EndParkTwiceIsRefused()
    {
        var g = Green.Spawn(() =>
        {
            var token = Parking.BeginPark(WaitReason.Other);
            Assert.That(token.TryWake(), Is.True);
            Parking.EndPark(token);
            Parking.EndPark(token);
        });
        g.Join();
        Assert.That(g.Exception, Is.TypeOf<InvalidOperationException>().With.Message.Contains("already ended"));
    }

    [Test]
    public void WakingOnTheHubFromAnotherThreadIsRefused()
    {
        ParkToken token = default;
        var g = Green.Spawn(() =>
        {
            token = Parking.BeginPark(WaitReason.Other);
            Parking.EndPark(token);
        });
        Green.Sleep(0);
        var e = Assert.Throws<InvalidOperationException>(() => Task.Run(() => token.TryWake()).GetAwaiter().GetResult());
        Assert.That(e!.Message, Does.Contain("PostWake"));
        token.TryWake();
        g.Join();
    }

    [Test]
    public void ADefaultTokenIsRefused()
    {
        ParkToken token = default;
        Assert.That(token.IsPending, Is.False);
        Assert.Throws<InvalidOperationException>(() => token.TryWake());
        Assert.Throws<InvalidOperationException>(() => token.PostWake());
        Assert.Throws<InvalidOperationException>(() => Parking.EndPark(token));
    }

    [Test]
    public void WaitForTaskReportsCompletionOrTimeoutWithoutThrowingTheTasksOutcome()
    {
        var never = new TaskCompletionSource();
        Assert.That(Parking.WaitForTask(never.Task, TimeSpan.FromMilliseconds(20)), Is.False);
        var failed = Task.Run(() => throw new ApplicationException("the task's own"));
        Assert.That(Parking.WaitForTask(failed, TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(failed.IsFaulted, Is.True);
    }

    [Test]
    public void AKillCancelsTheOperationAWaitForTaskWasParkedOn()
    {
        using var cancel = new CancellationTokenSource();
        var operation = Task.Delay(Timeout.Infinite, cancel.Token);
        var g = Green.Spawn(() => Parking.WaitForTask(operation, null, WaitReason.Other, cancel, drainOnInterrupt: true));
        Green.Sleep(0);
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(operation.IsCanceled, Is.True, "drained: the operation finished before the kill propagated");
    }

    [Test]
    public void InsideSuppressCooperationNothingParks()
    {
        Assert.That(Parking.ParkingHub(), Is.SameAs(Hub));
        using (Parking.SuppressCooperation())
        {
            Assert.That(Parking.IsCooperationSuppressed, Is.True);
            Assert.That(Parking.ParkingHub(), Is.Null);
            Assert.Throws<InvalidOperationException>(() => Parking.BeginPark(WaitReason.Other));
            Assert.That(Parking.CurrentHub, Is.SameAs(Hub), "the hub is still there; only parking is off");
        }
        Assert.That(Parking.IsCooperationSuppressed, Is.False);
        Assert.That(Parking.ParkingHub(), Is.SameAs(Hub));
    }

    [Test]
    public void OffAHubThereIsNoParkingHub()
    {
        // A thread of its own: a pool thread may keep the hub an earlier test's blocking call created on it.
        (Hub? current, Hub? parking) = (null, null);
        var thread = new Thread(() => (current, parking) = (Parking.CurrentHub, Parking.ParkingHub()));
        thread.Start();
        thread.Join();
        Assert.That(current, Is.Null);
        Assert.That(parking, Is.Null);
    }

    [Test]
    public void RunReleasedLetsTheOtherGreenletsRunWhileTheCallBlocks()
    {
        var order = new List<string>();
        using var gate = new ManualResetEventSlim();
        var blocked = Green.Spawn(() =>
        {
            Assert.That(Parking.CanReleaseBaton, Is.True);
            var result = Parking.RunReleased(static g => { g.Wait(TimeSpan.FromSeconds(10)); return "returned"; }, gate, WaitReason.Blocking);
            order.Add(result);
        });
        Green.Spawn(() =>
        {
            order.Add("other ran");
            gate.Set();
        });
        blocked.Join(TimeSpan.FromSeconds(10));
        Assert.That(order, Is.EqualTo(new[] { "other ran", "returned" }));
    }

    [TestCase(WaitReason.Lock, "returned first")]
    [TestCase(WaitReason.Blocking, "others first")]
    public void AReleasedLockWaitIsResumedAheadOfTheReadyGreenlets(WaitReason reason, string expected)
    {
        // A lock's released wait returns owning the lock, which every other thread that wants it waits for until its
        // greenlet runs: it is resumed before the greenlets already ready. Any other released call takes its turn.
        var order = new List<string>();
        using var gate = new ManualResetEventSlim();
        bool returned = false;
        var released = Green.Spawn(() =>
        {
            Parking.RunReleased(static s => { s.gate.Wait(TimeSpan.FromSeconds(10)); return true; }, (gate, 0), reason);
            order.Add("released");
        });
        Green.Sleep(10); // it is in its call
        for (int i = 0; i < 3; i++) Green.Spawn(() => order.Add("ready"));
        gate.Set();
        var spin = System.Diagnostics.Stopwatch.StartNew();
        while (spin.ElapsedMilliseconds < 50) { } // holding the baton: the call returns and posts its return meanwhile
        returned = true;
        released.Join(TimeSpan.FromSeconds(10));
        Green.Sleep(10);
        Assert.That(returned, Is.True);
        Assert.That(order[0] == "released" ? "returned first" : "others first", Is.EqualTo(expected), string.Join(", ", order));
    }

    [Test]
    public void KeepPendingRaisesAKillThatARunReleasedCallRaisedAtTheNextBlockingPointInstead()
    {
        using var gate = new ManualResetEventSlim();
        var steps = new List<string>();
        var g = Green.Spawn(() =>
        {
            try
            {
                // Not interruptible: the kill waits for the call's return and is raised then.
                Parking.RunReleased(static e => e.Wait(TimeSpan.FromSeconds(10)), gate, WaitReason.Event);
                steps.Add("returned");
            }
            catch (GreenletExit e)
            {
                steps.Add("raised on return");
                Parking.KeepPending(e);
            }
            steps.Add("went on");
            Green.Sleep(TimeSpan.FromSeconds(10));
            steps.Add("slept");
        });
        Green.Sleep(20);
        g.Kill(block: false);
        gate.Set();
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(steps, Is.EqualTo(new[] { "raised on return", "went on" }), "the kill came again at the next blocking point");
    }

    [Test]
    public void KeepPendingRefusesNullAndAThreadWithNoHub()
    {
        Assert.Throws<ArgumentNullException>(() => Parking.KeepPending(null!));
        Exception? offHub = null;
        var thread = new Thread(() => offHub = Record(() => Parking.KeepPending(new GreenletExit())));
        thread.Start();
        thread.Join();
        Assert.That(offHub, Is.InstanceOf<InvalidOperationException>());

        static Exception? Record(Action call)
        {
            try
            {
                call();
                return null;
            }
            catch (Exception e)
            {
                return e;
            }
        }
    }

    [Test]
    public void AReleasedWaitInterruptedForATimeoutRaisesItEvenIfTheTimeoutIsCancelledBeforeTheBatonIsBack()
    {
        using var never = new ManualResetEventSlim();
        object? outcome = "still waiting";
        var g = Green.Spawn(() =>
        {
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            // Runs on the hub right after the expired timeout interrupted the wait, before the greenlet has the baton back:
            // the runtime's own token, which the timeout cancels there (Token, handed to foreign code, is cancelled off the hub).
            timeout.ExpiryToken.Register(timeout.Cancel);
            try
            {
                outcome = Parking.RunReleased(static e => e.Wait(Timeout.Infinite), never, WaitReason.Event, interruptible: true);
            }
            catch (GreenTimeoutException e)
            {
                outcome = e;
            }
        });
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(outcome, Is.InstanceOf<GreenTimeoutException>(),
            "an interrupted wait has no result of its own: returning false says an infinite wait timed out");
    }

    [Test]
    public void AShieldedStacklessGreenletsReleasedWaitIsNotInterruptedByItsTimeout()
    {
        using var gate = new ManualResetEventSlim();
        object? outcome = "not run";
        var g = Green.SpawnAsync(async () =>
        {
            await Task.Yield();
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            using (Green.Shield())
            {
                try
                {
                    outcome = Parking.RunReleased(static e => e.Wait(TimeSpan.FromSeconds(10)), gate, WaitReason.Event, interruptible: true);
                }
                catch (Exception e)
                {
                    outcome = e;
                }
            }
        });
        Green.Spawn(() =>
        {
            Green.Sleep(150);
            gate.Set();
        });
        g.Join(TimeSpan.FromSeconds(10));
        Assert.That(outcome, Is.EqualTo(true), "the shield holds the expired timeout back: the wait ends when the event is set");
    }

    [Test]
    public void YieldLetsTheReadyGreenletsRunOnce()
    {
        var order = new List<string>();
        Green.Spawn(() => order.Add("other"));
        bool others = Parking.Yield();
        Assert.That(others, Is.True);
        Assert.That(order, Is.EqualTo(new[] { "other" }));
        Assert.That(Parking.Yield(), Is.False);
    }

    [Test]
    public void PollUntilAsksAgainUntilTheConditionHolds()
    {
        int asked = 0;
        Assert.That(Parking.PollUntil(() => ++asked == 3, TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(asked, Is.EqualTo(3));
        Assert.That(Parking.PollUntil(() => false, TimeSpan.FromMilliseconds(10)), Is.False);
    }

    /// <summary>A linked token per foreign operation (every HttpClient call a greenlet makes): what it costs a greenlet that
    /// links once, as a request's greenlet does, and that the kill still cancels it.</summary>
    [Test]
    public void ALinkedTokenCostsItsSourceOnlyAndTheKillStillCancelsIt()
    {
        static long LinkOnce()
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            Parking.LinkCancellation(CancellationToken.None, out var linked);
            linked!.Dispose();
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        for (int i = 0; i < 20; i++) Green.Spawn(LinkOnce).Join();
        var bytes = Enumerable.Range(0, 20).Select(_ => Green.Spawn(LinkOnce).Get()).Min();
        TestContext.Out.WriteLine($"{bytes} bytes for a greenlet's first linked token");
        // Measured: 592 bytes while the source registered on the greenlet's own token (which made that token's source, its
        // registration list and a node), 264 since the kill reaches the greenlet's sources itself.
        Assert.That(bytes, Is.LessThan(400));

        CancellationToken token = default;
        var g = Green.Spawn(() =>
        {
            token = Parking.LinkCancellation(CancellationToken.None, out var linked);
            using (linked) Green.Sleep(TimeSpan.FromSeconds(30));
        });
        Green.Sleep(10);
        g.Kill();
        Assert.That(SpinWait.SpinUntil(() => token.IsCancellationRequested, TimeSpan.FromSeconds(10)), Is.True, "the kill cancelled the linked token");
    }
}
