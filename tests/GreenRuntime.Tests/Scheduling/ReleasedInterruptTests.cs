using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>
/// The interrupt handshake of a released wait on its own: a kill's interrupt that lands while the wait returns by
/// itself is consumed by the carrier, never thrown out of <see cref="ReleasedInterrupt.Finish"/> (which runs without
/// the baton) and never left pending on the thread.
/// </summary>
public class ReleasedInterruptTests
{
    [TestCase(false)]
    [TestCase(true)]
    public void AnInterruptThatLandsWhileTheWaitReturnsIsConsumedInsideFinish(bool callThrew)
    {
        Exception? escaped = null, failureAfter = null;
        bool pendingAfter = false, outcomeDropped = true;
        var callsOwn = new InvalidOperationException("the call's own exception");
        var carrier = new Thread(() =>
        {
            int interrupted = 0;
            // Delivery held open: the interrupt is pending on this thread while Request has not yet written Delivered,
            // as when the hub's thread is preempted inside Interrupt() on a loaded machine.
            var handshake = new ReleasedInterrupt(Thread.CurrentThread, target =>
            {
                target.Interrupt();
                Volatile.Write(ref interrupted, 1);
                Thread.Sleep(100);
            });
            var hub = new Thread(() => handshake.Request(Kill));
            hub.Start();
            while (Volatile.Read(ref interrupted) == 0) Thread.SpinWait(100); // a pure spin: it cannot meet the interrupt

            Exception? failure = callThrew ? callsOwn : null; // the wait returned (or failed) by itself
            try
            {
                outcomeDropped = handshake.Finish(ref failure);
            }
            catch (Exception e)
            {
                escaped = e;
            }
            failureAfter = failure;
            pendingAfter = ConsumePendingInterrupt();
            hub.Join();
        });
        carrier.Start();
        carrier.Join();

        Assert.Multiple(() =>
        {
            Assert.That(escaped, Is.Null, "Finish threw: the carrier would go on without the baton");
            Assert.That(pendingAfter, Is.False, "the interrupt was left pending on the carrier");
            Assert.That(failureAfter, Is.SameAs(callThrew ? callsOwn : null), "the call's own outcome is kept");
            Assert.That(outcomeDropped, Is.False, "the call ended by itself: its outcome stands");
        });
    }

    [Test]
    public void AWaitInterruptedByTheHandshakeHasItsExceptionDropped()
    {
        Exception? failureAfter = new InvalidOperationException("not replaced"), reason = null;
        bool pendingAfter = false, interrupted = false;
        var carrier = new Thread(() =>
        {
            var handshake = new ReleasedInterrupt(Thread.CurrentThread);
            var hub = new Thread(() => handshake.Request(Kill));
            Exception? failure = null;
            try
            {
                hub.Start();
                Thread.Sleep(Timeout.Infinite); // the released wait, interrupted by the handshake
            }
            catch (ThreadInterruptedException e)
            {
                failure = e;
            }
            interrupted = handshake.Finish(ref failure);
            failureAfter = failure;
            reason = handshake.Reason;
            pendingAfter = ConsumePendingInterrupt();
            hub.Join();
        });
        carrier.Start();
        carrier.Join();

        Assert.That(failureAfter, Is.Null, "the interrupt was the handshake's: the pending kill is raised instead");
        Assert.That(pendingAfter, Is.False);
        Assert.That(interrupted, Is.True, "the wait has no outcome of its own");
        Assert.That(reason, Is.SameAs(Kill), "what asked for the interrupt is kept for the caller to raise");
    }

    private static readonly Exception Kill = new GreenletExit();

    /// <summary>Whether an interrupt was pending on the calling thread (it is consumed).</summary>
    private static bool ConsumePendingInterrupt()
    {
        try
        {
            Thread.Sleep(0);
            return false;
        }
        catch (ThreadInterruptedException)
        {
            return true;
        }
    }
}
