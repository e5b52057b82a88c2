using System.Collections;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Io;
using GreenRuntime.LowLevel;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.LowLevel;

/// <summary>
/// <see cref="CooperativeSocket.Poll"/> and <see cref="CooperativeSocket.Select"/> (what the patched Socket.Poll and
/// Socket.Select run on a greenlet) are woken by the reactor when a socket becomes ready, not by a clock: on a hub whose
/// clock stands still, a wait that asked again at intervals would never see the data; these see it at once.
/// </summary>
[TestFixture]
public class CooperativePollTests : GreenRuntime.Tests.Io.ReactorSocketTest
{
    private readonly StoppedClock _clock = new();

    protected override HubOptions CreateOptions(ILoggerFactory loggerFactory) => new() { LoggerFactory = loggerFactory, TimeProvider = _clock };

    /// <summary>Hub time that never moves: a timer of the hub never fires.</summary>
    private sealed class StoppedClock : TimeProvider
    {
        public override long TimestampFrequency => 1_000_000_000;
        public override long GetTimestamp() => 1_000_000_000;
    }


    [Test]
    public void PollIsWokenByTheDataItWaitsFor()
    {
        var (a, b) = Pair();
        var answers = new List<bool>();
        var poller = Green.Spawn(() =>
        {
            for (int round = 0; round < 50; round++)
            {
                answers.Add(CooperativeSocket.Poll(b, 10_000_000, SelectMode.SelectRead));
                Assert.That(b.Receive(new byte[1]), Is.EqualTo(1)); // readable: returns at once
            }
        });
        for (int round = 0; round < 50; round++)
        {
            Green.Sleep(0); // the poller waits by now
            a.Send(new byte[] { (byte)round });
            // Only the reactor's edge can end the poller's wait: hub time stands still.
            while (answers.Count <= round && !poller.Ready) Green.Sleep(0);
        }
        poller.Join(TimeSpan.FromSeconds(10));
        Assert.That(poller.Exception, Is.Null);
        Assert.That(answers, Has.Count.EqualTo(50).And.All.True);
    }

    [Test]
    public void PollOfTheOtherDirectionOrOfAnotherSocketIsNotWokenByData()
    {
        var (a, b) = Pair();
        var (c, d) = Pair();
        bool? answer = null;
        var poller = Green.Spawn(() => answer = CooperativeSocket.Poll(d, 10_000_000, SelectMode.SelectRead));
        Green.Sleep(0);
        a.Send(new byte[] { 1 }); // to b, not d
        for (int i = 0; i < 20; i++) Green.Sleep(0);
        Assert.That(answer, Is.Null, "a wake from another socket's data would have asked again and parked again, not answered");
        c.Send(new byte[] { 2 });
        poller.Join(TimeSpan.FromSeconds(10));
        Assert.That(answer, Is.True);
    }

    [Test]
    public void SelectLeavesTheReadySocketsAndIsWokenByAnyOfThem()
    {
        var pairs = Enumerable.Range(0, 4).Select(_ => Pair()).ToList();
        IList? ready = null;
        var selector = Green.Spawn(() =>
        {
            var read = new ArrayList(pairs.Select(p => p.B).ToList());
            var errors = new ArrayList(pairs.Select(p => p.B).ToList());
            CooperativeSocket.Select(read, null, errors, -1);
            ready = read;
            Assert.That(errors, Is.Empty, "data is no error");
        });
        Green.Sleep(0);
        pairs[2].A.Send(new byte[] { 7 });
        selector.Join(TimeSpan.FromSeconds(10));
        Assert.That(selector.Exception, Is.Null);
        Assert.That(ready, Is.EqualTo(new[] { pairs[2].B }));
    }

    [Test]
    public void AKillEndsAPollAndASelect()
    {
        var (_, b) = Pair();
        var poller = Green.Spawn(() => CooperativeSocket.Poll(b, -1, SelectMode.SelectRead));
        var selector = Green.Spawn(() => CooperativeSocket.Select(new ArrayList { b }, null, null, -1));
        Green.Sleep(0);
        poller.Kill();
        selector.Kill();
        Assert.That(poller.Dead && selector.Dead, Is.True);
        Assert.That(poller.Exception ?? selector.Exception, Is.Null, "killed, not failed");
    }
}

/// <summary>The timeouts of <see cref="CooperativeSocket.Poll"/> and <see cref="CooperativeSocket.Select"/>, on the hub's
/// real clock.</summary>
[TestFixture]
public class CooperativePollTimeoutTests : GreenRuntime.Tests.Io.ReactorSocketTest
{
    [Test]
    public void NothingReadyWithinTheTimeoutEmptiesTheListsAndPollSaysNo()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var a = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        a.Connect(listener.LocalEndPoint!);
        using var b = listener.Accept();
        var read = new ArrayList { b };
        var selected = Green.Spawn(() => CooperativeSocket.Select(read, null, null, 20_000));
        var polled = Green.Spawn(() => CooperativeSocket.Poll(b, 20_000, SelectMode.SelectRead));
        Assert.That(polled.Get(TimeSpan.FromSeconds(10)), Is.False);
        selected.Join(TimeSpan.FromSeconds(10));
        Assert.That(selected.Exception, Is.Null);
        Assert.That(read, Is.Empty);
        // A listening socket is readable when a connection waits to be accepted.
        var accepting = Green.Spawn(() => CooperativeSocket.Poll(listener, 5_000_000, SelectMode.SelectRead));
        Green.Sleep(1);
        using var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        c.Connect(listener.LocalEndPoint!);
        Assert.That(accepting.Get(TimeSpan.FromSeconds(10)), Is.True);
    }
}
