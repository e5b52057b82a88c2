using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Closing a socket that a blocked call waits on, the way legacy code stops a reader or a listener: the call ends at once,
/// with what a thread blocked in it sees (.NET unblocks a thread's system call when its socket is closed). The reactor's
/// periodic sweep alone noticed the close up to 250 ms later, with another error.
/// </summary>
public class SocketCloseTests : PatchedHubTest
{
    /// <summary>The blocked calls, each given its socket: what the call waits on, and the socket to close under it.</summary>
    private static readonly Dictionary<string, Func<(Action Blocked, Socket Closed, Socket? Peer)>> s_calls = new()
    {
        ["Receive"] = () =>
        {
            var (client, peer) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            return (() => client.Receive(new byte[8]), client, peer);
        },
        ["NetworkStream.Read"] = () =>
        {
            var (client, peer) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            return (() => new NetworkStream(client).ReadExactly(new byte[8]), client, peer);
        },
        ["Send to a peer that never reads"] = () =>
        {
            var (client, peer) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            client.SendBufferSize = 4096;
            return (() => { while (true) client.Send(new byte[1 << 20]); }, client, peer);
        },
        ["Accept"] = () =>
        {
            var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(4);
            return (() => listener.Accept(), listener, null);
        },
        ["UDP ReceiveFrom"] = () =>
        {
            var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            return (() => udp.ReceiveFrom(new byte[8], ref from), udp, null);
        },
    };

    /// <summary>What the blocked call ended with, as "type: code".</summary>
    private static string Outcome(Exception? e) => e switch
    {
        null => "returned",
        SocketException se => $"SocketException: {se.SocketErrorCode}",
        IOException { InnerException: SocketException se } => $"IOException: {se.SocketErrorCode}",
        _ => e.GetType().Name,
    };

    private static Exception? Catch(Action call)
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

    private static string OnAThread(string name)
    {
        var (blocked, closed, peer) = s_calls[name]();
        using var _ = peer;
        Exception? error = null;
        var thread = new Thread(() => error = Catch(blocked));
        thread.Start();
        Thread.Sleep(100);
        closed.Dispose();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True, "the thread's call ended");
        return Outcome(error);
    }

    [TestCaseSource(nameof(CallNames))]
    public void ClosingTheSocketEndsTheBlockedCallAsOnAThread(string name)
    {
        string onThread = OnAThread(name);
        var (blocked, closed, peer) = s_calls[name]();
        using var _ = peer;
        Exception? error = null;
        var waiter = Green.Spawn(() => error = Catch(blocked));
        Green.Sleep(50);
        Assert.That(waiter.WaitReason, Is.EqualTo(WaitReason.Socket), "the call is parked on the reactor");
        closed.Dispose();
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True, "the greenlet's call ended");
        Assert.That(Outcome(error), Is.EqualTo(onThread));
    }

    public static IEnumerable<string> CallNames() => s_calls.Keys;

    [Test]
    public void ManySocketsWaitedOnAndClosedByTheGreenletsOfTwoHubsAtOnceNeverStallAHub()
    {
        // Every first wait on a socket and every close passes through one process-wide table of watched sockets. Its lock
        // is taken by hub code (the reactor's sweep) holding the baton and by greenlets; a greenlet that won it in a
        // released wait and queued for the baton while holding it deadlocked its hub (an HttpServer under wrk on two hubs).
        const int perGreenlet = 150, greenletsPerHub = 8;
        using var group = new HubGroup(2);
        var workers = Enumerable.Range(0, 2 * greenletsPerHub).Select(i => group.SpawnOn(i % 2, () =>
        {
            var buffer = new byte[1];
            for (int n = 0; n < perGreenlet; n++)
            {
                var (client, server) = GreenRuntime.TestSupport.LoopbackPair.Connect();
                using (client)
                using (server)
                {
                    var reader = Green.Spawn(() => server.Receive(buffer));
                    Green.Sleep(0);
                    client.Send([7]);
                    reader.Join();
                }
            }
        })).ToList();
        foreach (var w in workers) Assert.That(w.Join(TimeSpan.FromSeconds(60)), Is.True, "every hub kept running");
        Assert.That(workers.All(w => w.Successful), Is.True);
    }

    [Test]
    public void ClosingFromAnotherGreenletOrAThreadWakesTheReaderAtOnce()
    {
        // The sweep alone takes up to 250 ms per close: 20 closes would take 2.5 s on average.
        var elapsed = Stopwatch.StartNew();
        for (int i = 0; i < 20; i++)
        {
            var (client, server) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            using (server)
            {
                var reader = Green.Spawn(() => Catch(() => client.Receive(new byte[8])));
                var closer = i % 2 == 0
                    ? Green.Spawn(() => client.Close())
                    : Green.Spawn(() =>
                    {
                        var thread = new Thread(() => client.Close());
                        thread.Start();
                        thread.Join(); // patched: parks this greenlet only
                    });
                Green.JoinAll([reader, closer], TimeSpan.FromSeconds(10));
                Assert.That(reader.Dead, Is.True);
                Assert.That(Outcome(reader.Get()), Is.EqualTo("SocketException: ConnectionAborted"));
            }
        }
        Assert.That(elapsed.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1.2)), "the readers woke at the close, not at the sweep");
    }
}
