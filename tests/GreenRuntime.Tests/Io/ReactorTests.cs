using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Io;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.Io;

/// <summary>Socket waits on the hub's epoll reactor (Io/Reactor.cs, Io/SocketIo.cs).</summary>
[TestFixture]
public class ReactorTests : ReactorSocketTest
{
    private int Receive(Socket s, Span<byte> buffer, TimeSpan? timeout = null)
    {
        Assert.That(SocketIo.TryReceive(Hub, s, buffer, SocketFlags.None, timeout, out int n, out var error), Is.True, "the reactor path handles a connected TCP socket");
        if (error != SocketError.Success) throw new SocketException((int)error);
        return n;
    }

    private void Send(Socket s, ReadOnlySpan<byte> data)
    {
        Assert.That(SocketIo.TrySend(Hub, s, data, SocketFlags.None, null, out int sent, out var error), Is.True);
        Assert.That(error, Is.EqualTo(SocketError.Success));
        Assert.That(sent, Is.EqualTo(data.Length));
    }

    [Test]
    public void Two_greenlets_receiving_on_one_socket_both_get_woken()
    {
        // As two threads blocked in Receive on one socket: each byte goes to one of them, and neither waits forever.
        var (a, b) = Pair();
        var got = new List<int>();
        var readers = Enumerable.Range(0, 2).Select(_ => Green.Spawn(() =>
        {
            var one = new byte[1];
            got.Add(Receive(b, one, TimeSpan.FromSeconds(10)));
        })).ToList();
        Green.Sleep(20); // both are parked on the reactor
        Send(a, [1]);
        Green.Sleep(20);
        Send(a, [2]);
        var watch = Stopwatch.StartNew();
        Green.JoinAll(readers);
        Assert.That(readers.All(g => g.Successful), Is.True);
        Assert.That(got, Is.EqualTo(new[] { 1, 1 }), "each got one byte");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the second byte woke the reader still waiting (not its 10 s timeout)");
    }

    [Test]
    public void A_stackless_wait_and_a_parked_receive_on_one_socket_are_both_woken()
    {
        // An idle-connection style readiness wait and a blocking receive meet on one socket: one edge ends both.
        var (a, b) = Pair();
        var waiting = GreenRuntime.LowLevel.CooperativeSocket.WaitReadableAsync(b, TimeSpan.FromSeconds(10));
        int got = -1;
        var reader = Green.Spawn(() => got = Receive(b, new byte[1], TimeSpan.FromSeconds(10)));
        Green.Sleep(20); // the receive is parked beside the stackless wait
        var watch = Stopwatch.StartNew();
        Send(a, [5]);
        Assert.That(reader.Join(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(got, Is.EqualTo(1));
        Assert.That(Green.Wait(waiting, TimeSpan.FromSeconds(5)), Is.EqualTo(SocketError.Success), "the stackless wait ended too");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the edge ended it, not its 10 s timeout");
    }

    [Test]
    public void Killing_the_first_of_two_receivers_on_one_socket_leaves_the_other_waiting_for_data()
    {
        var (a, b) = Pair();
        int got = -1;
        var first = Green.Spawn(() => Receive(b, new byte[1], TimeSpan.FromSeconds(10)));
        var second = Green.Spawn(() => got = Receive(b, new byte[1], TimeSpan.FromSeconds(10)));
        Green.Sleep(20);
        first.Kill();
        Send(a, [7]);
        Assert.That(second.Join(TimeSpan.FromSeconds(5)), Is.True, "the byte woke the receiver that was left");
        Assert.That(got, Is.EqualTo(1));
    }

    [Test]
    public void A_receive_parks_only_its_greenlet_until_data_arrives()
    {
        var (a, b) = Pair();
        var order = new List<string>();
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            order.Add("reader waits");
            int n = Receive(b, buffer);
            order.Add($"reader got {n}");
            return buffer[0];
        });
        Green.Spawn(() =>
        {
            order.Add("writer sleeps");
            Green.Sleep(50);
            order.Add("writer sends");
            Send(a, new byte[] { 42, 43 });
        });
        Assert.That(reader.Get(), Is.EqualTo(42));
        Assert.That(order, Is.EqualTo(new[] { "reader waits", "writer sleeps", "writer sends", "reader got 2" }));
        Assert.That(Hub.Reactor!.RegistrationCount, Is.GreaterThanOrEqualTo(1));
    }

    [Test]
    public void Fifty_connections_echo_every_byte_in_one_hub()
    {
        const int connections = 50, rounds = 40;
        var greenlets = new List<Greenlet>();
        long total = 0;
        for (int c = 0; c < connections; c++)
        {
            var (client, server) = Pair();
            greenlets.Add(Green.Spawn(() =>
            {
                var buffer = new byte[64];
                while (true)
                {
                    int n = Receive(server, buffer);
                    if (n == 0) return;
                    Send(server, buffer.AsSpan(0, n));
                }
            }));
            int id = c;
            greenlets.Add(Green.Spawn(() =>
            {
                var message = new byte[64];
                var reply = new byte[64];
                for (int r = 0; r < rounds; r++)
                {
                    message[0] = (byte)id;
                    message[1] = (byte)r;
                    Send(client, message);
                    int got = 0;
                    while (got < message.Length) got += Receive(client, reply.AsSpan(got));
                    Assert.That(reply[0..2], Is.EqualTo(message[0..2]));
                    total++;
                }
                client.Shutdown(SocketShutdown.Send);
            }));
        }
        Green.JoinAll(greenlets, TimeSpan.FromSeconds(60), raiseError: true);
        Assert.That(total, Is.EqualTo(connections * rounds));
        Assert.That(greenlets.All(g => g.Successful), Is.True);
    }

    [Test]
    public void A_receive_timeout_reports_TimedOut_and_the_socket_stays_usable()
    {
        var (a, b) = Pair();
        var buffer = new byte[8];
        var started = Stopwatch.StartNew();
        Assert.That(SocketIo.TryReceive(Hub, b, buffer, SocketFlags.None, TimeSpan.FromMilliseconds(100), out _, out var error), Is.True);
        Assert.That(error, Is.EqualTo(SocketError.TimedOut));
        Assert.That(started.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(90)));
        Send(a, new byte[] { 7 });
        Assert.That(Receive(b, buffer, TimeSpan.FromSeconds(10)), Is.EqualTo(1));
        Assert.That(buffer[0], Is.EqualTo(7));
    }

    [Test]
    public void Killing_a_waiting_greenlet_leaves_the_socket_to_the_next_reader()
    {
        var (a, b) = Pair();
        var victim = Green.Spawn(() => Receive(b, new byte[8]));
        Green.Sleep(20);
        Assert.That(victim.WaitReason, Is.EqualTo(WaitReason.Socket));
        victim.Kill();
        Assert.That(victim.Dead, Is.True);
        Assert.That(((Greenlet)victim).Value, Is.InstanceOf<GreenletExit>(), "killed in its receive (gevent: GreenletExit is the value)");
        var buffer = new byte[8];
        var next = Green.Spawn(() => Receive(b, buffer));
        Green.Sleep(20);
        Send(a, new byte[] { 1, 2, 3 });
        Assert.That(next.Get(), Is.EqualTo(3), "nothing was consumed by the killed receive");
        Assert.That(buffer[..3], Is.EqualTo(new byte[] { 1, 2, 3 }));
    }

    [Test]
    public void Closing_a_socket_wakes_the_greenlet_waiting_on_it()
    {
        var (_, b) = Pair();
        SocketError seen = SocketError.Success;
        var waiter = Green.Spawn(() => SocketIo.TryReceive(Hub, b, new byte[8], SocketFlags.None, null, out _, out seen));
        Green.Sleep(20);
        b.Dispose(); // close() silently removes the fd from epoll, and nobody reports it: the reactor's sweep must notice
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True, "the waiter was woken");
        Assert.That(waiter.Get(), Is.True);
        Assert.That(seen, Is.EqualTo(SocketError.ConnectionAborted), "what a thread blocked in Receive sees when its socket is closed");
    }

    [Test]
    public void A_socket_closed_after_its_wake_and_before_the_receive_ran_again_ends_it_as_a_closed_socket()
    {
        // The wake said "readable", and the socket was closed before the greenlet ran again (HttpClient's cancellation
        // closes the connection from the token's callback): the receive must end as a thread's blocked receive does,
        // not hand back to the original, which then throws ObjectDisposedException on the closed socket.
        var (a, b) = Pair();
        SocketError seen = SocketError.Success;
        var waiter = Green.Spawn(() => SocketIo.TryReceive(Hub, b, new byte[8], SocketFlags.None, null, out _, out seen));
        Green.Sleep(20);
        Assert.That(waiter.WaitReason, Is.EqualTo(WaitReason.Socket));
        Send(a, [1]);
        // Yield until the reactor's poll has woken the waiter, which then waits in the ready queue behind this greenlet.
        for (int i = 0; i < 1000 && waiter.State_ != GreenletState.Ready; i++) Green.Sleep(0);
        Assert.That(waiter.State_, Is.EqualTo(GreenletState.Ready), "woken, and not run yet");
        b.Dispose();
        CooperativeSocket.NotifyClosed(b);
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(waiter.Get(), Is.True, "handled: the original would throw ObjectDisposedException");
        Assert.That(seen, Is.EqualTo(SocketError.ConnectionAborted), "what a thread blocked in Receive sees when its socket is closed");
    }

    [Test]
    public void A_send_closed_after_its_wake_and_before_it_sent_anything_ends_it_as_a_closed_socket()
    {
        var (a, b) = Pair();
        a.SendBufferSize = b.ReceiveBufferSize = 4096;
        a.Blocking = false;
        var chunk = new byte[4096];
        while (a.Send(chunk, SocketFlags.None, out var full) > 0 && full == SocketError.Success) { }
        a.Blocking = true;
        SocketError seen = SocketError.Success;
        int sent = -1;
        var sender = Green.Spawn(() => SocketIo.TrySend(Hub, a, chunk, SocketFlags.None, null, out sent, out seen));
        Green.Sleep(20);
        Assert.That(sender.WaitReason, Is.EqualTo(WaitReason.Socket), "waits for room, nothing of it sent");
        var drain = new byte[1 << 20];
        // Room again: the reactor wakes the sender (the data queued on the sending side moves over as the reader drains).
        var patience = Stopwatch.StartNew();
        while (sender.State_ != GreenletState.Ready && !sender.Dead && patience.Elapsed < TimeSpan.FromSeconds(10))
        {
            while (b.Available > 0) b.Receive(drain);
            Green.Sleep(0);
        }
        Assert.That(sender.State_, Is.EqualTo(GreenletState.Ready), "woken, and not run yet");
        a.Dispose();
        CooperativeSocket.NotifyClosed(a);
        Assert.That(sender.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(sender.Get(), Is.True, "handled: the original would throw ObjectDisposedException");
        Assert.That((seen, sent), Is.EqualTo((SocketError.ConnectionAborted, 0)), "what a thread blocked in Send sees when its socket is closed");
    }

    [Test]
    public void A_reported_close_wakes_the_waiters_at_once_whichever_thread_closes()
    {
        // The sweep alone takes up to 250 ms per close, 2.5 s on average for 20; reported, they take next to nothing.
        var elapsed = Stopwatch.StartNew();
        for (int i = 0; i < 20; i++)
        {
            var (_, b) = Pair();
            SocketError seen = SocketError.Success;
            var waiter = Green.Spawn(() => SocketIo.TryReceive(Hub, b, new byte[8], SocketFlags.None, null, out _, out seen));
            Green.Sleep(1);
            Assert.That(waiter.WaitReason, Is.EqualTo(WaitReason.Socket));
            if (i % 2 == 0)
            {
                b.Dispose();
                CooperativeSocket.NotifyClosed(b);
            }
            else
            {
                var closer = new Thread(() =>
                {
                    b.Dispose();
                    CooperativeSocket.NotifyClosed(b);
                });
                closer.Start();
                closer.Join();
            }
            Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True, "the waiter was woken");
            Assert.That(seen, Is.EqualTo(SocketError.ConnectionAborted));
        }
        Assert.That(elapsed.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1.2)), "woken when the close was reported, not by the sweep");
        Assert.That(Hub.Reactor!.RegistrationCount, Is.Zero, "the closed sockets' registrations went with their waits");
    }

    [Test]
    public void A_reported_close_of_a_socket_that_is_still_open_ends_nothing()
    {
        var (a, b) = Pair();
        var waiter = Green.Spawn(() => Receive(b, new byte[8], TimeSpan.FromSeconds(10)));
        Green.Sleep(10);
        CooperativeSocket.NotifyClosed(b);
        Green.Sleep(10);
        Assert.That(waiter.Dead, Is.False);
        Send(a, [7]);
        Assert.That(waiter.Get(), Is.EqualTo(1));
    }

    [Test]
    public void A_reader_whose_receives_never_wait_gives_the_others_a_turn_when_the_monitor_asks()
    {
        // A database reader streaming a large result: the server keeps the socket full, so every receive finds data and
        // the reader never parks. Without a turn for the others, the ticker below stalled for the whole transfer.
        var (a, b) = Pair();
        b.ReceiveBufferSize = 1 << 20;
        long total = 0;
        bool done = false;
        var writer = new Thread(() =>
        {
            var chunk = new byte[64 * 1024];
            try
            {
                while (!Volatile.Read(ref done)) a.Send(chunk);
            }
            catch (SocketException)
            {
                // the test closed the pair
            }
        }) { IsBackground = true };
        writer.Start();
        var watch = Stopwatch.StartNew();
        var longestGap = TimeSpan.Zero;
        var ticker = Green.Spawn(() =>
        {
            var last = watch.Elapsed;
            while (!Volatile.Read(ref done))
            {
                Green.Sleep(5);
                var now = watch.Elapsed;
                if (now - last > longestGap) longestGap = now - last;
                last = now;
            }
        });
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[4096];
            while (watch.Elapsed < TimeSpan.FromSeconds(1.5))
            {
                total += Receive(b, buffer);
                Thread.SpinWait(2000); // parsing what came: slower than the writer, so data is always there
            }
            Volatile.Write(ref done, true);
        });
        Green.JoinAll([reader, ticker], raiseError: true);
        a.Dispose();
        writer.Join(TimeSpan.FromSeconds(10));
        Assert.That(total, Is.GreaterThan(0));
        // The monitor (MaxBlockingTime 100 ms) samples every 25 ms and asks after a sample or two; generous for a noisy machine.
        Assert.That(longestGap, Is.LessThan(TimeSpan.FromMilliseconds(700)), "the ticker ran during the transfer");
    }

    [Test]
    public void A_reused_descriptor_number_is_not_confused_with_the_closed_socket()
    {
        var (a1, b1) = Pair();
        Send(a1, new byte[] { 1 });
        Assert.That(Receive(b1, new byte[1]), Is.EqualTo(1)); // b1 is registered
        int oldCount = Hub.Reactor!.RegistrationCount;
        b1.Dispose();
        a1.Dispose();
        var (a2, b2) = Pair(); // very likely the same numbers again
        var buffer = new byte[4];
        var reader = Green.Spawn(() => Receive(b2, buffer));
        Green.Sleep(20);
        Send(a2, new byte[] { 9, 9 });
        Assert.That(reader.Get(), Is.EqualTo(2));
        Assert.That(Hub.Reactor.RegistrationCount, Is.LessThanOrEqualTo(oldCount + 2));
    }

    [Test]
    public void A_send_larger_than_the_kernel_buffers_parks_until_the_peer_reads()
    {
        var (a, b) = Pair();
        var data = new byte[8 << 20];
        new Random(5).NextBytes(data);
        var received = new byte[data.Length];
        var writer = Green.Spawn(() =>
        {
            Send(a, data);
            a.Shutdown(SocketShutdown.Send);
        });
        var reader = Green.Spawn(() =>
        {
            int got = 0;
            while (true)
            {
                Green.Sleep(1); // a slow reader: the writer must wait for room more than once
                var into = got < received.Length ? received.AsSpan(got, Math.Min(256 << 10, received.Length - got)) : new byte[1];
                int n = Receive(b, into);
                if (n == 0) return got;
                got += n;
            }
        });
        Assert.That(reader.Get(), Is.EqualTo(data.Length));
        Assert.That(writer.Successful, Is.True);
        Assert.That(received.AsSpan().SequenceEqual(data), Is.True);
    }

    [Test]
    public void A_post_from_another_thread_ends_a_sleep_in_epoll_at_once()
    {
        var (_, b) = Pair();
        Green.Spawn(() => Receive(b, new byte[1], TimeSpan.FromSeconds(30))); // the hub now sleeps in epoll
        var done = new Event();
        var started = Stopwatch.StartNew();
        new Thread(() =>
        {
            Thread.Sleep(50);
            Hub.Post(done.Set);
        }).Start();
        Assert.That(done.Wait(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That(started.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "woken by the eventfd, not by the 30 s receive timeout");
    }

    [Test]
    public void Timers_keep_their_order_while_the_hub_sleeps_in_epoll()
    {
        var (_, b) = Pair();
        Green.Spawn(() => Receive(b, new byte[1], TimeSpan.FromSeconds(30)));
        Green.Sleep(10);
        var fired = new List<int>();
        var sleepers = new[] { 60, 20, 40 }.Select(ms => Green.Spawn(() =>
        {
            Green.Sleep(ms);
            fired.Add(ms);
        })).ToList();
        var started = Stopwatch.StartNew();
        Green.JoinAll(sleepers);
        Assert.That(fired, Is.EqualTo(new[] { 20, 40, 60 }));
        Assert.That(started.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(55)), "no timer fired early");
    }

    [Test]
    public void A_greenlet_waiting_on_a_socket_keeps_LoopExit_away()
    {
        var (a, b) = Pair();
        var reader = Green.Spawn(() => Receive(b, new byte[4]));
        new Thread(() =>
        {
            Thread.Sleep(100);
            a.Send(new byte[] { 1 }); // another thread: the hub learns of it only through epoll
        }).Start();
        Assert.That(reader.Get(), Is.EqualTo(1));
    }

    [Test]
    public void Errors_map_to_the_SocketError_dotnet_reports()
    {
        var (a, b) = Pair();
        a.LingerState = new LingerOption(true, 0);
        a.Dispose(); // RST
        Green.Sleep(20);
        Assert.That(SocketIo.TryReceive(Hub, b, new byte[4], SocketFlags.None, null, out _, out var error), Is.True);
        Assert.That(error, Is.EqualTo(SocketError.ConnectionReset));
        Assert.That(b.Connected, Is.False, "the Socket's state is updated as after the original's failure");
    }

    [Test]
    public void Datagram_sockets_wait_on_the_reactor_but_keep_the_original_receive()
    {
        using var receiver = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        receiver.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Assert.That(SocketIo.TryReceive(Hub, receiver, new byte[8], SocketFlags.None, null, out _, out _), Is.False,
            "datagram receives are the original's (truncation is reported as MessageSize there)");
        var waiter = Green.Spawn(() =>
        {
            Assert.That(SocketIo.TryWaitReadable(Hub, receiver, TimeSpan.FromSeconds(20), out var error), Is.True);
            return error;
        });
        Green.Sleep(20);
        sender.SendTo(new byte[] { 1, 2, 3 }, receiver.LocalEndPoint!);
        Assert.That(waiter.Get(), Is.EqualTo(SocketError.Success));
        Assert.That(receiver.Receive(new byte[8]), Is.EqualTo(3), "the wait consumed nothing");
    }

    [Test]
    public void Calls_on_a_disposed_socket_are_left_to_the_original()
    {
        var (_, b) = Pair();
        b.Dispose();
        Assert.That(SocketIo.TryReceive(Hub, b, new byte[4], SocketFlags.None, null, out _, out _), Is.False);
        Assert.That(SocketIo.TrySend(Hub, b, new byte[4], SocketFlags.None, null, out _, out _), Is.False);
    }
}
