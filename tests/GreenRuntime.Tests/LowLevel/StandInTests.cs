using System.Runtime.ExceptionServices;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.LowLevel;

/// <summary>
/// <see cref="Parking.RunReleased"/> with <c>standIn: true</c>: when every carrier the hub may use is taken, the thread of
/// a parked greenlet runs the hub while the released call blocks, until that greenlet is resumed.
/// </summary>
public class StandInTests
{
    [Test]
    public void WithEveryCarrierTakenAReleasedCallBlocksWhileOtherGreenletsRun()
    {
        bool couldRelease = true, couldStandIn = false, released = false;
        int ticks = 0;
        OnOwnHub(() =>
        {
            using var signal = new ManualResetEventSlim();
            // Two carriers: the ticker keeps one, the waiter runs on the other. The ticker parks and resumes 200 times
            // while the waiter's thread blocks, and only then lets it go: the hub must run meanwhile.
            var ticker = Green.Spawn(() =>
            {
                for (; ticks < 200; ticks++) Green.Sleep(1);
                signal.Set();
            });
            var waiter = Green.Spawn(() =>
            {
                Green.Sleep(5);
                couldRelease = Parking.CanReleaseBaton;
                couldStandIn = Parking.CanReleaseBatonToStandIn;
                released = Parking.RunReleased(static s => s.Wait(20_000), signal, WaitReason.Blocking, standIn: true);
            });
            Assert.That(Green.JoinAll([ticker, waiter], TimeSpan.FromSeconds(20), raiseError: true), Has.Count.EqualTo(2));
        });
        Assert.Multiple(() =>
        {
            Assert.That(couldRelease, Is.False, "both carriers were taken");
            Assert.That(couldStandIn, Is.True, "a parked greenlet's thread could run the hub");
            Assert.That(released, Is.True, "the call returned when the ticker signalled");
            Assert.That(ticks, Is.EqualTo(200));
        });
    }

    [Test]
    public void WithoutAStandInTheCallIsRefusedAtTheCap()
    {
        bool refused = false;
        OnOwnHub(() =>
        {
            var gate = new Event();
            var holder = Green.Spawn(() => gate.Wait());
            var caller = Green.Spawn(() =>
            {
                Green.Sleep(5);
                // Every carrier is taken, and without standIn no thread may run the hub meanwhile.
                Assert.That(Parking.CanReleaseBaton, Is.False);
                refused = Assert.Throws<InvalidOperationException>(() => Parking.RunReleased(static _ => 0, 0, WaitReason.Blocking)) != null;
                gate.Set();
            });
            Green.JoinAll([holder, caller], TimeSpan.FromSeconds(20), raiseError: true);
        });
        Assert.That(refused, Is.True);
    }

    /// <summary>Runs <paramref name="body"/> as the main greenlet of a hub with two carriers, on a thread of its own, with
    /// a bounded join: a hub that stops for good fails the test instead of hanging the run.</summary>
    private static void OnOwnHub(Action body)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxCarriers = 2, MaxBlockingTime = null });
                body();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(40)), Is.True, "the hub finished");
        if (failure != null) ExceptionDispatchInfo.Throw(failure);
    }
}
