using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.LowLevel;

/// <summary>The core's one cooperative socket layer, without servers or patches: stream sockets (the reactor path on
/// Linux x64) and datagram sockets (which the reactor declines: the async readability wait, then the receive).</summary>
public class CooperativeSocketTests : HubTest
{
    private Socket _listener = null!;
    private Socket _client = null!;
    private Socket _server = null!;

    [SetUp]
    public void ConnectPair()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(8);
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _client.Connect(_listener.LocalEndPoint!);
        _server = _listener.Accept();
    }

    [TearDown]
    public void Close()
    {
        _client.Dispose();
        _server.Dispose();
        _listener.Dispose();
    }

    [Test]
    public void AReceiveParksOnlyItsGreenlet()
    {
        var order = new List<string>();
        var receiver = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            int n = CooperativeSocket.Receive(_server, buffer, SocketFlags.None, null, out var error);
            order.Add($"{error} {Encoding.ASCII.GetString(buffer, 0, n)}");
        });
        Green.Spawn(() => order.Add("other ran"));
        Green.Sleep(30);
        Assert.That(order, Is.EqualTo(new[] { "other ran" }));
        _client.Send("hi"u8);
        receiver.Join(TimeSpan.FromSeconds(10));
        Assert.That(order, Is.EqualTo(new[] { "other ran", "Success hi" }));
    }

    [Test]
    public void AGreenletWhoseReceivesNeverWaitGivesTheOthersATurnEverySlice()
    {
        // The blocking monitor off: only the length of the reader's turn can make it give way.
        Hub.Dispose();
        Hub = new Hub(new HubOptions { MaxBlockingTime = null });
        // A plain thread keeps the socket's buffers full, far ahead of the reader: none of its receives waits.
        var feeder = new Thread(() =>
        {
            var chunk = new byte[64 * 1024];
            try
            {
                while (true) _client.Send(chunk);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // the test is over
            }
        }) { IsBackground = true };
        feeder.Start();
        int ticks = 0, ticksWhileReading = -1;
        var ticker = Green.Spawn(() => { while (true) { Green.Sleep(1); ticks++; } });
        Green.Sleep(20);
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            int before = ticks;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (clock.ElapsedMilliseconds < 300)
            {
                CooperativeSocket.Receive(_server, buffer, SocketFlags.None, null, out _);
                var spin = System.Diagnostics.Stopwatch.StartNew();
                while (spin.Elapsed.TotalMilliseconds < 0.02) { } // a little work per message
            }
            ticksWhileReading = ticks - before;
        });
        Assert.That(reader.Join(TimeSpan.FromSeconds(30)), Is.True);
        ticker.Kill();
        // A turn lasts at most a slice (5 ms) from its first call that did not wait: about 50 turns for the ticker in
        // 300 ms; holding the hub throughout, none.
        Assert.That(ticksWhileReading, Is.GreaterThanOrEqualTo(10));
    }

    [Test]
    public void AContinuationThatWaitsOnAnotherSocketWhenItsSocketWasClosedLeavesTheReactorWorking()
    {
        // A ConfigureAwait(false) continuation of the readiness wait runs where the wait completes: inside the reactor's
        // sweep of closed sockets. Waiting there on a socket the reactor has not seen yet adds a registration while the
        // sweep walks them.
        using var fresh = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        SocketError? second = null;
        var waiter = Green.SpawnAsync(async () =>
        {
            await CooperativeSocket.WaitReadableAsync(_server, null).ConfigureAwait(false);
            second = await CooperativeSocket.WaitReadableAsync(fresh, TimeSpan.FromMilliseconds(50)).ConfigureAwait(false);
        });
        Green.Sleep(20);
        _server.Dispose(); // the sweep (every 250 ms) finds it closed and ends the first wait
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True, "the waiter ended");
        Assert.That(waiter.Exception, Is.Null);
        Assert.That(second, Is.Not.Null);
        var after = Green.Spawn(() => Green.Sleep(300));
        Assert.That(after.Join(TimeSpan.FromSeconds(10)), Is.True, "the hub still runs its greenlets");
    }

    [Test]
    public void WaitReadableAsyncHoldsNoThreadAndCompletesWhenDataArrives()
    {
        var result = new List<string>();
        var waiter = Green.SpawnAsync(async () =>
        {
            var error = await CooperativeSocket.WaitReadableAsync(_server, TimeSpan.FromSeconds(10), Green.Current.CancellationToken);
            var buffer = new byte[16];
            int n = CooperativeSocket.ReceiveNow(_server, buffer, out var receiveError);
            result.Add($"{error} {receiveError} {Encoding.ASCII.GetString(buffer, 0, n)}");
        });
        Green.Sleep(30);
        Assert.That(result, Is.Empty);
        Assert.That(Hub.GetRunInfo().Carriers.HeldByThisHub, Is.Zero, "the waiting stackless greenlet keeps no carrier");
        _client.Send("ping"u8);
        waiter.Join(TimeSpan.FromSeconds(10));
        Assert.That(result, Is.EqualTo(new[] { "Success Success ping" }));
    }

    [Test]
    public void WaitReadableAsyncTimesOutIsCancelledByAKillAndRefusesASecondWaiter()
    {
        var timedOut = Green.SpawnAsync(async () => await CooperativeSocket.WaitReadableAsync(_server, TimeSpan.FromMilliseconds(20)));
        Assert.That(timedOut.Get(), Is.EqualTo(SocketError.TimedOut));

        bool cancelled = false;
        var killed = Green.SpawnAsync(async () =>
        {
            try
            {
                await CooperativeSocket.WaitReadableAsync(_server, null, Green.Current.CancellationToken);
            }
            catch (OperationCanceledException)
            {
                cancelled = true;
                throw;
            }
        });
        Green.Sleep(10);
        var second = Green.SpawnAsync(async () => await CooperativeSocket.WaitReadableAsync(_server, TimeSpan.FromSeconds(5)));
        second.Join(TimeSpan.FromSeconds(10));
        Assert.That(second.Exception, Is.InstanceOf<InvalidOperationException>(), "one reader per socket at a time");
        killed.Kill(block: true, timeout: TimeSpan.FromSeconds(10));
        Assert.That(killed.Dead && cancelled, Is.True, "the kill cancelled the wait at once");

        // The socket is still usable afterwards.
        _client.Send("x"u8);
        var after = Green.SpawnAsync(async () => await CooperativeSocket.WaitReadableAsync(_server, TimeSpan.FromSeconds(10)));
        Assert.That(after.Get(), Is.EqualTo(SocketError.Success));
    }

    [Test]
    public void ReceiveNowNeverWaits()
    {
        var buffer = new byte[16];
        Assert.That(CooperativeSocket.ReceiveNow(_server, buffer, out var error), Is.EqualTo(-1), "nothing there yet");
        Assert.That(error, Is.EqualTo(SocketError.Success));
        _client.Send("abc"u8);
        Assert.That(CooperativeSocket.WaitReadable(_server, TimeSpan.FromSeconds(10)), Is.EqualTo(SocketError.Success));
        Assert.That(CooperativeSocket.ReceiveNow(_server, buffer, out error), Is.EqualTo(3));
        _client.Shutdown(SocketShutdown.Send);
        Assert.That(CooperativeSocket.WaitReadable(_server, TimeSpan.FromSeconds(10)), Is.EqualTo(SocketError.Success));
        Assert.That(CooperativeSocket.ReceiveNow(_server, buffer, out error), Is.Zero, "the end of the stream");
    }

    [Test]
    public void AReceiveTimeoutIsReportedAsTimedOutAndLosesNoData()
    {
        var buffer = new byte[16];
        int n = CooperativeSocket.Receive(_server, buffer, SocketFlags.None, TimeSpan.FromMilliseconds(20), out var error);
        Assert.That((n, error), Is.EqualTo((0, SocketError.TimedOut)));
        _client.Send("later"u8);
        n = CooperativeSocket.Receive(_server, buffer, SocketFlags.None, TimeSpan.FromSeconds(10), out error);
        Assert.That(Encoding.ASCII.GetString(buffer, 0, n), Is.EqualTo("later"));
    }

    [Test]
    public void AKilledReceiveLeavesTheDataForTheNextOne()
    {
        var buffer = new byte[16];
        var killed = Green.Spawn(() => CooperativeSocket.Receive(_server, buffer, SocketFlags.None, null, out _));
        Green.Sleep(10);
        killed.Kill();
        Assert.That(killed.Dead, Is.True);
        _client.Send("kept"u8);
        var next = new byte[16];
        int n = CooperativeSocket.Receive(_server, next, SocketFlags.None, TimeSpan.FromSeconds(10), out _);
        Assert.That(Encoding.ASCII.GetString(next, 0, n), Is.EqualTo("kept"));
        Assert.That(buffer, Is.All.EqualTo(0), "nothing is written into the killed receive's buffer");
    }

    [Test]
    public void ASendLargerThanTheKernelBufferParksUntilThePeerReads()
    {
        var data = new byte[8 * 1024 * 1024];
        new Random(1).NextBytes(data);
        var reader = Task.Run(() =>
        {
            var all = new MemoryStream();
            var chunk = new byte[64 * 1024];
            while (all.Length < data.Length)
            {
                int n = _client.Receive(chunk);
                if (n == 0) break;
                all.Write(chunk, 0, n);
            }
            return all.ToArray();
        });
        int sent = CooperativeSocket.Send(_server, data, SocketFlags.None, TimeSpan.FromSeconds(30), out var error);
        Assert.That((sent, error), Is.EqualTo((data.Length, SocketError.Success)));
        Assert.That(Parking.WaitForTask(reader, TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(reader.Result, Is.EqualTo(data));
    }

    [Test]
    public void AKillOrTimeoutThatComesWhileAMessageIsPartlySentIsRaisedOnlyOnceAllOfItWentOut()
    {
        // A message cut short breaks every framed protocol on the connection (SSH, TLS, a database's wire protocol): the
        // peer reads the next message as the rest of this one. A blocking Send never returns part-way, so the layer's
        // must not either. The peer here reads nothing until the timeout has expired and the sender has given up on the
        // first message, then reads everything.
        _server.SendBufferSize = 64 * 1024;
        _client.ReceiveBufferSize = 64 * 1024;
        var first = new byte[8 * 1024 * 1024];
        Array.Fill(first, (byte)1);
        var second = new byte[1000];
        Array.Fill(second, (byte)2);
        var stall = new ManualResetEventSlim();
        var reader = Task.Run(() =>
        {
            stall.Wait();
            var all = new MemoryStream();
            var chunk = new byte[64 * 1024];
            int n;
            while ((n = _client.Receive(chunk)) > 0) all.Write(chunk, 0, n);
            return all.ToArray();
        });
        Exception? raised = null;
        var sender = Green.Spawn(() =>
        {
            try
            {
                Green.WithTimeout(TimeSpan.FromMilliseconds(50), () =>
                {
                    int sent = CooperativeSocket.Send(_server, first, SocketFlags.None, null, out _);
                    Assert.That(sent, Is.EqualTo(first.Length), "the send returns as the original would: all of it sent");
                    Green.Sleep(1); // the next blocking point raises the expired timeout
                    Assert.Fail("the expired timeout was not raised");
                });
            }
            catch (GreenTimeoutException e)
            {
                raised = e;
            }
            CooperativeSocket.Send(_server, second, SocketFlags.None, null, out _);
            _server.Shutdown(SocketShutdown.Send);
        });
        Green.Sleep(300);
        Assert.That(sender.Dead, Is.False, "the timeout expired while the first message was partly sent: the send goes on");
        stall.Set();
        Assert.That(Parking.WaitForTask(reader, TimeSpan.FromSeconds(30)), Is.True);
        Green.JoinAll([sender]);
        Assert.That(sender.Successful, Is.True);
        Assert.That(raised, Is.Not.Null, "the timeout is raised at the blocking point after the send");
        Assert.That(reader.Result, Is.EqualTo(first.Concat(second).ToArray()), "each message arrives whole");
    }

    [Test]
    public void APartlySentMessageToAPeerThatNeverReadsEndsWhenItsSocketIsClosed()
    {
        // How a server stops a handler stuck writing to a client that stopped reading: kill it, then close its socket.
        _server.SendBufferSize = 64 * 1024;
        _client.ReceiveBufferSize = 64 * 1024;
        SocketError error = SocketError.Success;
        var writer = Green.Spawn(() => CooperativeSocket.Send(_server, new byte[8 * 1024 * 1024], SocketFlags.None, null, out error));
        Green.Sleep(50);
        writer.Kill(block: false);
        Green.Sleep(50);
        Assert.That(writer.Dead, Is.False, "part of the message went out: the kill waits for the send");
        _server.Dispose();
        Green.JoinAll([writer], TimeSpan.FromSeconds(10));
        Assert.That(writer.Dead, Is.True);
        Assert.That(error, Is.EqualTo(SocketError.ConnectionAborted), "the send ends as the original's does when its socket is closed");
    }

    [Test]
    public void AKillBeforeAnythingOfAMessageWentOutEndsTheSendAtOnce()
    {
        // Nothing of the message is on the stream yet, so ending the send there cuts nothing.
        _server.SendBufferSize = 64 * 1024;
        _client.ReceiveBufferSize = 64 * 1024;
        var filler = new byte[8 * 1024 * 1024];
        int queued = 0;
        while (true)
        {
            int n = CooperativeSocket.Send(_server, filler, SocketFlags.None, TimeSpan.FromMilliseconds(50), out var error);
            queued += n;
            if (error == SocketError.TimedOut) break; // the kernel's buffers are full
        }
        bool returned = false;
        var killed = Green.Spawn(() =>
        {
            CooperativeSocket.Send(_server, "late"u8.ToArray(), SocketFlags.None, null, out _);
            returned = true;
        });
        Green.Sleep(20);
        killed.Kill();
        Assert.That((killed.Dead, returned), Is.EqualTo((true, false)));
        Assert.That(queued, Is.GreaterThan(0));
    }

    [Test]
    public void TheReactorCarriesSocketsOnLinuxX64()
    {
        bool linuxX64 = OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64;
        Assert.That(CooperativeSocket.HasReactor, Is.EqualTo(linuxX64));
    }

    [Test]
    public void WaitReadableAndWaitWritableReportReadiness()
    {
        Assert.That(CooperativeSocket.WaitWritable(_server, TimeSpan.FromSeconds(10)), Is.EqualTo(SocketError.Success));
        Assert.That(CooperativeSocket.WaitReadable(_server, TimeSpan.FromMilliseconds(20)), Is.EqualTo(SocketError.TimedOut));
        _client.Send("x"u8);
        Assert.That(CooperativeSocket.WaitReadable(_server, TimeSpan.FromSeconds(10)), Is.EqualTo(SocketError.Success));
        Assert.That(_server.Available, Is.EqualTo(1), "waiting consumed nothing");
    }

    [Test]
    public void AcceptAndConnectParkOnlyTheirGreenlets()
    {
        var accepted = Green.Spawn(() => CooperativeSocket.Accept(_listener));
        var connected = Green.Spawn(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            CooperativeSocket.Connect(s, _listener.LocalEndPoint!);
            return s;
        });
        using var a = accepted.Get(TimeSpan.FromSeconds(10));
        using var c = connected.Get(TimeSpan.FromSeconds(10));
        Assert.That(c.Connected, Is.True);
        Assert.That(c.Blocking, Is.True, "the socket's blocking mode is left as it was");
        CooperativeSocket.Send(c, "ping"u8, SocketFlags.None, null, out _);
        var buffer = new byte[8];
        int n = CooperativeSocket.Receive(a, buffer, SocketFlags.None, TimeSpan.FromSeconds(10), out _);
        Assert.That(Encoding.ASCII.GetString(buffer, 0, n), Is.EqualTo("ping"));
    }

    [Test]
    public void AUnixConnectToAFullBacklogWaitsForRoomAsABlockingConnectDoes()
    {
        // For AF_UNIX a non-blocking connect to a full backlog fails with EAGAIN and starts nothing: the socket is writable
        // at once with no error, so treating it as "in progress" reported connections that did not exist.
        var path = Path.Combine(Path.GetTempPath(), "gr-backlog-" + Guid.NewGuid().ToString("N")[..8]);
        var address = new UnixDomainSocketEndPoint(path);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(address);
        listener.Listen(1);
        try
        {
            const int clients = 8;
            var connects = Enumerable.Range(0, clients).Select(i => Green.Spawn(() =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                CooperativeSocket.Connect(s, address);
                CooperativeSocket.Send(s, [(byte)i], SocketFlags.None, null, out var error);
                Assert.That(error, Is.EqualTo(SocketError.Success), $"client {i} sends on the connection its connect reported");
                return s;
            })).ToList();
            Green.Sleep(50); // the backlog fills: the other connects wait for room
            var received = new List<int>();
            using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(10)); // a connect reported but never made
            for (int i = 0; i < clients; i++)
            {
                using var accepted = CooperativeSocket.Accept(listener, patience.Token);
                var buffer = new byte[1];
                int n = CooperativeSocket.Receive(accepted, buffer, SocketFlags.None, TimeSpan.FromSeconds(10), out _);
                Assert.That(n, Is.EqualTo(1), "every accepted connection carries its client's byte");
                received.Add(buffer[0]);
            }
            foreach (var c in connects) c.Get(TimeSpan.FromSeconds(10)).Dispose();
            Assert.That(received.Order(), Is.EqualTo(Enumerable.Range(0, clients)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void AUnixConnectWaitingForRoomInAFullBacklogEndsOnAKillOrTimeout()
    {
        var path = Path.Combine(Path.GetTempPath(), "gr-backlog-" + Guid.NewGuid().ToString("N")[..8]);
        var address = new UnixDomainSocketEndPoint(path);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(address);
        listener.Listen(0);
        var filling = new List<Socket>();
        try
        {
            // Fill the backlog (never accepted) until a plain non-blocking connect finds no room.
            while (true)
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { Blocking = false };
                filling.Add(s);
                try
                {
                    s.Connect(address);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    break;
                }
            }
            using var killed = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            var waiting = Green.Spawn(() => CooperativeSocket.Connect(killed, address));
            Green.Sleep(50);
            Assert.That(waiting.Ready, Is.False, "the connect waits for room");
            waiting.Kill();
            Assert.That(waiting.Ready, Is.True);
            Assert.That(killed.Connected, Is.False);
            using var timed = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Assert.Throws<GreenTimeoutException>(() => Green.WithTimeout(TimeSpan.FromMilliseconds(50), () => CooperativeSocket.Connect(timed, address)));
            Assert.That(timed.Connected, Is.False);
        }
        finally
        {
            foreach (var s in filling) s.Dispose();
            File.Delete(path);
        }
    }

    [Test]
    public void ARefusedConnectThrowsTheSocketsError()
    {
        var port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _listener.Dispose();
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var e = Assert.Throws<SocketException>(() => CooperativeSocket.Connect(s, new IPEndPoint(IPAddress.Loopback, port)));
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.ConnectionRefused));
    }

    [Test]
    public void AKilledAcceptLeavesTheListenerUsable()
    {
        var killed = Green.Spawn(() => CooperativeSocket.Accept(_listener));
        Green.Sleep(10);
        killed.Kill();
        var accepted = Green.Spawn(() => CooperativeSocket.Accept(_listener));
        using var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        c.Connect(_listener.LocalEndPoint!);
        using var a = accepted.Get(TimeSpan.FromSeconds(10));
        Assert.That(a.RemoteEndPoint, Is.EqualTo(c.LocalEndPoint));
    }

    [Test]
    public void ACancelledAcceptThrowsOperationCanceled()
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(20));
        Assert.That(() => CooperativeSocket.Accept(_listener, cancel.Token), Throws.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public void DatagramsTakeTheAsyncPath()
    {
        using var a = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var b = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        a.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        b.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        b.Connect(a.LocalEndPoint!);
        var order = new List<string>();
        var receiver = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            int n = CooperativeSocket.Receive(a, buffer, SocketFlags.None, TimeSpan.FromSeconds(10), out var error);
            order.Add($"{error} {Encoding.ASCII.GetString(buffer, 0, n)}");
        });
        Green.Spawn(() => order.Add("other ran"));
        Green.Sleep(20);
        // A datagram send also takes the async path (SendAsync of a pooled copy).
        int sent = CooperativeSocket.Send(b, "datagram"u8, SocketFlags.None, TimeSpan.FromSeconds(10), out var sendError);
        Assert.That((sent, sendError), Is.EqualTo((8, SocketError.Success)));
        receiver.Join(TimeSpan.FromSeconds(10));
        Assert.That(order, Is.EqualTo(new[] { "other ran", "Success datagram" }));
        var timedOut = CooperativeSocket.Receive(a, new byte[4], SocketFlags.None, TimeSpan.FromMilliseconds(20), out var err);
        Assert.That((timedOut, err), Is.EqualTo((0, SocketError.TimedOut)));
    }

    /// <summary>A greenlet's datagram receive used to switch the socket to non-blocking mode for its one system call, so a
    /// plain thread's blocking receive on the same socket that started in that instant failed with WouldBlock, which a
    /// blocking socket never reports on a thread. Now the greenlet's receive is a per-call non-blocking system call
    /// (MSG_DONTWAIT) and the socket's mode never changes.</summary>
    [Test]
    public void AThreadSharingADatagramSocketWithAGreenletNeverSeesWouldBlock()
    {
        using var shared = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        shared.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        shared.ReceiveTimeout = 1000; // ends the thread's loop once the sender has stopped
        const int Count = 20_000;
        int received = 0, wouldBlock = 0;
        bool sending = true;
        var thread = new Thread(() =>
        {
            var buffer = new byte[16];
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            while (true)
            {
                try
                {
                    shared.ReceiveFrom(buffer, ref from);
                    Interlocked.Increment(ref received);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    Interlocked.Increment(ref wouldBlock);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
                {
                    if (!Volatile.Read(ref sending)) return;
                }
            }
        });
        var greenlet = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            while (true)
            {
                CooperativeSocket.Receive(shared, buffer, SocketFlags.None, TimeSpan.FromMilliseconds(500), out var error);
                if (error == SocketError.TimedOut)
                {
                    if (!Volatile.Read(ref sending)) return;
                    continue;
                }
                Assert.That(error, Is.EqualTo(SocketError.Success));
                Interlocked.Increment(ref received);
            }
        });
        var feeder = new Thread(() =>
        {
            for (int i = 0; i < Count; i++)
            {
                sender.SendTo("datagram"u8, shared.LocalEndPoint!);
                if (i % 4 == 0) Thread.Yield();
            }
            Volatile.Write(ref sending, false);
        });
        thread.Start();
        feeder.Start();
        greenlet.Join();
        Parking.PollUntil(() => !thread.IsAlive && !feeder.IsAlive, null);
        Assert.That(wouldBlock, Is.Zero, "a blocking socket's receive on a thread never reports WouldBlock");
        Assert.That(received, Is.GreaterThan(Count / 2), "the datagrams reached the two readers");
    }

    /// <summary>A greenlet's accept on the reactor used to switch the listener to non-blocking mode for its one system
    /// call, so a plain thread's blocking Accept on the same listener that started in that instant failed with
    /// WouldBlock, and the listener's Blocking read false meanwhile. Now it is an accept4 on the listener's descriptor,
    /// Blocking untouched.</summary>
    [Test]
    public void AThreadSharingAListenerWithGreenletsNeverSeesItNonBlocking()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(512);
        const int Count = 3000;
        int accepted = 0, wouldBlock = 0, sawNonBlocking = 0;
        bool connecting = true;
        var target = listener.LocalEndPoint!;
        var acceptor = new Thread(() =>
        {
            while (true)
            {
                try
                {
                    listener.Accept().Dispose();
                    Interlocked.Increment(ref accepted);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    Interlocked.Increment(ref wouldBlock);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    return; // the listener closed at the end
                }
            }
        });
        var watcher = new Thread(() =>
        {
            while (Volatile.Read(ref connecting))
            {
                if (!listener.Blocking) Interlocked.Increment(ref sawNonBlocking);
            }
        });
        var greenlets = Enumerable.Range(0, 2).Select(_ => Green.Spawn(() =>
        {
            while (true)
            {
                try
                {
                    CooperativeSocket.Accept(listener).Dispose();
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.Interrupted)
                {
                    return; // the listener closed at the end
                }
                Interlocked.Increment(ref accepted);
            }
        })).ToList();
        var connector = new Thread(() =>
        {
            for (int i = 0; i < Count; i++)
            {
                using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                client.Connect(target);
            }
            Volatile.Write(ref connecting, false);
        });
        acceptor.Start();
        watcher.Start();
        connector.Start();
        Parking.PollUntil(() => !connector.IsAlive && Volatile.Read(ref accepted) >= Count, TimeSpan.FromSeconds(60));
        listener.Close();
        CooperativeSocket.NotifyClosed(listener);
        Green.JoinAll(greenlets, timeout: TimeSpan.FromSeconds(10));
        Parking.PollUntil(() => !acceptor.IsAlive && !watcher.IsAlive, TimeSpan.FromSeconds(10));
        Assert.That(wouldBlock, Is.Zero, "a blocking listener's Accept on a thread never reports WouldBlock");
        Assert.That(sawNonBlocking, Is.Zero, "the listener stayed blocking for everyone else");
        Assert.That(accepted, Is.EqualTo(Count), "every connection was accepted once");
    }

    /// <summary>The socket a greenlet's accept returns is the one a thread's Accept returns: blocking, connected, the same
    /// family, type and endpoints, and the options the kernel carries over from the listener (TCP_NODELAY).</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void AnAcceptedSocketIsTheOneAThreadGets(bool dualMode)
    {
        using var listener = dualMode
            ? new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) { DualMode = true }
            : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(dualMode ? IPAddress.IPv6Any : IPAddress.Loopback, 0));
        listener.Listen();
        listener.NoDelay = true;
        var target = new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndPoint!).Port);
        static string Describe(Socket s, Socket client) =>
            $"Blocking={s.Blocking} Connected={s.Connected} IsBound={s.IsBound} {s.AddressFamily} {s.SocketType} {s.ProtocolType} " +
            $"NoDelay={s.NoDelay} Local={s.LocalEndPoint} RemoteIsClient={Equals(((IPEndPoint)s.RemoteEndPoint!).Port, ((IPEndPoint)client.LocalEndPoint!).Port)} " +
            $"Remote={((IPEndPoint)s.RemoteEndPoint!).Address} {s.RemoteEndPoint!.GetType().Name} DualMode={(s.AddressFamily == AddressFamily.InterNetworkV6 ? s.DualMode : null)}";
        string Accepted(Func<Socket> accept)
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            client.Connect(target);
            using var socket = accept();
            socket.Send("x"u8);
            var one = new byte[1];
            return Describe(socket, client) + $" echo={client.Receive(one)}";
        }
        string? onThread = null;
        var thread = new Thread(() => onThread = Accepted(listener.Accept));
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
        var onGreenlet = Green.Spawn(() => Accepted(() => CooperativeSocket.Accept(listener))).Get(TimeSpan.FromSeconds(10));
        Assert.That(onGreenlet, Is.EqualTo(onThread));
        Assert.That(listener.Blocking, Is.True);
    }

    [Test]
    public void OffAGreenletThatMayParkTheLayerRefusesWithAClearMessage()
    {
        // A thread of its own: a pool thread may keep the hub an earlier test's blocking call created on it, and the
        // receive would then park on that hub (nothing ever arrives) instead of refusing.
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try { CooperativeSocket.Receive(_server, new byte[1], SocketFlags.None, null, out _); }
            catch (Exception e) { error = e; }
        });
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(30)), Is.True, "the call refuses at once");
        Assert.That(error, Is.InstanceOf<InvalidOperationException>());
        Assert.That(error!.Message, Does.Contain("greenlet that may park"));
    }
}
