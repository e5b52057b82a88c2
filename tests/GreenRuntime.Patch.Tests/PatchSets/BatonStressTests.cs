namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Stress tests, run by name (ideally with the CPUs kept busy by other processes): released calls (contended locks,
/// Monitor.Wait and PulseAll, Green.RunBlocking), idle periods in which the idle carrier lends the baton to a returning
/// call (Hub.IdleLending.cs), starts and yields, all on one hub at once. Debug builds check Invariant 1 (one baton holder)
/// at every take and release of the baton, so an interleaving that hands the baton to two threads fails the run. They
/// print how many returns took the idle baton, to show the lending path was exercised.
/// </summary>
[Explicit("stress test: run by name, ideally with the CPUs busy")]
public class BatonStressTests : PatchedHubTest
{
    [Test]
    public void ReleasedCallsIdlePeriodsAndStartsMixedOnOneHub([Values(1, 2, 3, 4)] int run)
    {
        var gate = new object();
        var signal = new object();
        int inside = 0, entered = 0;
        for (int round = 0; round < 60; round++)
        {
            int r = round;
            RunInGreenlets(40, i =>
            {
                for (int k = 0; k < 4; k++)
                {
                    switch ((i + k + r) % 5)
                    {
                        case 0:
                            lock (gate)
                            {
                                if (Interlocked.Increment(ref inside) != 1) throw new InvalidOperationException("two greenlets inside one lock");
                                entered++;
                                Thread.SpinWait(200);
                                Interlocked.Decrement(ref inside);
                            }
                            break;
                        case 1:
                            lock (gate)
                                Thread.Sleep(1); // parks holding the monitor: the others wait for it released
                            break;
                        case 2:
                            Green.RunBlocking(() => Thread.SpinWait(i * 50));
                            break;
                        case 3:
                            lock (signal)
                            {
                                Monitor.Wait(signal, 1);
                                Monitor.PulseAll(signal);
                            }
                            break;
                        default:
                            Thread.Sleep(i % 3); // idle gaps: the idle carrier offers the baton
                            Green.Spawn(() => Thread.Yield()).Join();
                            break;
                    }
                }
            });
        }
        TestContext.Progress.WriteLine($"{HubUnderTest.IdleBatonTakeovers} returns took the idle baton");
        Assert.That(entered, Is.EqualTo(Enumerable.Range(0, 60).Sum(r => Enumerable.Range(0, 40).Sum(i => Enumerable.Range(0, 4).Count(k => (i + k + r) % 5 == 0)))));
    }

    /// <summary>Every greenlet is in a released call most of the time, so the hub idles and its carrier offers the baton,
    /// and the calls' returns race each other and the idler for it. Two greenlets a round talk over a loopback socket, so
    /// the hub has a reactor: the idle carrier sleeps in epoll_wait and forwards the readiness it hears while lent.</summary>
    [Test]
    public void ReleasedCallsReturningToAnIdleHubAtOnce([Values(1, 2, 3, 4)] int run)
    {
        var gate = new object();
        int total = 0;
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        for (int round = 0; round < 100; round++)
        {
            RunInGreenlets(32, i =>
            {
                if (i == 30)
                {
                    using var accepted = listener.AcceptTcpClient();
                    var stream = accepted.GetStream();
                    stream.WriteByte((byte)stream.ReadByte());
                    return;
                }
                if (i == 31)
                {
                    using var client = new System.Net.Sockets.TcpClient();
                    client.Connect(System.Net.IPAddress.Loopback, port);
                    var stream = client.GetStream();
                    Thread.Sleep(1);
                    stream.WriteByte(7);
                    if (stream.ReadByte() != 7) throw new InvalidOperationException("the echo came back wrong");
                    return;
                }
                for (int k = 0; k < 5; k++)
                {
                    if ((i + k) % 3 == 0)
                    {
                        lock (gate) total++; // contended: released waits that return at once, one after the other
                    }
                    else
                    {
                        // The thread's own sleep (no hub on it inside the call): long enough for the hub to idle.
                        Green.RunBlocking(() => Thread.Sleep((i + k) % 3));
                    }
                    if (k % 2 == 0) Thread.Sleep(0);
                }
            });
        }
        TestContext.Progress.WriteLine($"{HubUnderTest.IdleBatonTakeovers} returns took the idle baton; {HubUnderTest.IdleEventsForwarded} forwarded socket events");
        Assert.That(total, Is.EqualTo(100 * Enumerable.Range(0, 30).Sum(i => Enumerable.Range(0, 5).Count(k => (i + k) % 3 == 0))));
    }
}
