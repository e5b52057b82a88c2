using System.Net;
using System.Net.Sockets;
using System.Text;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Async socket calls of stackless greenlets under Patch.All: completed through the hub's reactor (no thread pool,
/// no .NET socket engine), with the results, SocketError values and exceptions of the originals, which the tests
/// compare against the same scenario run off the hub.
/// </summary>
[TestFixture]
public class AsyncSocketReactorTests : PatchedHubTest
{
    private static Socket Listener(int backlog = 16)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(backlog);
        return listener;
    }

    /// <summary>A connected pair made with the (patched) blocking calls of the test's main greenlet.</summary>
    private static (Socket Client, Socket Server) Pair()
    {
        using var listener = Listener();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        return (client, listener.Accept());
    }

    /// <summary>Runs <paramref name="scenario"/> on a thread-pool thread with no hub: the original methods.</summary>
    private static T OffHub<T>(Func<Task<T>> scenario)
    {
        T result = default!;
        var thread = new Thread(() => result = Task.Run(scenario).GetAwaiter().GetResult());
        thread.Start();
        Green.Wait(Task.Run(() => thread.Join())); // the main greenlet parks; the scenario runs on its own thread
        return result;
    }

    private static async Task<Exception?> Failure(Func<Task> call)
    {
        try
        {
            await call();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    [Test]
    public void Concurrent_sends_on_one_socket_go_out_one_after_another_in_the_order_they_were_made()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        c.SendBufferSize = 4096; // the first send fills the buffers long before the reader starts
        var big = new byte[4 << 20];
        Array.Fill(big, (byte)'a');
        var smalls = new[] { "B"u8.ToArray(), "C"u8.ToArray(), "D"u8.ToArray() };
        var first = Green.SpawnAsync(async () => await c.SendAsync(big, SocketFlags.None));
        Green.Sleep(20); // the first waits for buffer space on the reactor
        var others = smalls.Select(b => Green.SpawnAsync(async () => await c.SendAsync(b, SocketFlags.None))).ToList();
        // A send queued behind it and cancelled meanwhile never goes out, and does not hold up those behind it.
        using var cancel = new CancellationTokenSource();
        var cancelled = Green.SpawnAsync(async () => await c.SendAsync("X"u8.ToArray(), SocketFlags.None, cancel.Token));
        var last = Green.SpawnAsync(async () => await new NetworkStream(c, ownsSocket: false).WriteAsync("E"u8.ToArray()));
        Green.Sleep(10);
        cancel.Cancel();
        var all = OffHub(async () =>
        {
            var buffer = new byte[big.Length + 4];
            int read = 0;
            while (read < buffer.Length)
            {
                int n = await s.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None);
                if (n == 0) break;
                read += n;
            }
            return buffer[..read];
        });
        Green.JoinAll([first, .. others, cancelled, last], TimeSpan.FromSeconds(30));
        Assert.That(first.Successful && others.All(g => g.Successful) && last.Successful, Is.True, "every send completed");
        Assert.That(cancelled.Exception, Is.InstanceOf<OperationCanceledException>());
        Assert.That(all, Has.Length.EqualTo(big.Length + 4));
        Assert.That(all.AsSpan(0, big.Length).IndexOfAnyExcept((byte)'a'), Is.EqualTo(-1), "the first send's bytes came out whole");
        Assert.That(System.Text.Encoding.ASCII.GetString(all, big.Length, 4), Is.EqualTo("BCDE"), "then the others, in order");
    }

    /// <summary>A stackless greenlet that receives one byte from <paramref name="socket"/> and returns it as text.</summary>
    private static Greenlet<string> ReceiveOneByte(Socket socket, CancellationToken token = default) => Green.SpawnAsync(async () =>
    {
        var one = new byte[1];
        int n = await socket.ReceiveAsync(one.AsMemory(), SocketFlags.None, token);
        return Encoding.ASCII.GetString(one, 0, n);
    });

    [Test]
    public void Concurrent_receives_on_one_socket_get_the_bytes_in_the_order_they_were_made()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var first = ReceiveOneByte(s);
        Green.Sleep(20); // the first waits on the reactor for data
        var later = Enumerable.Range(0, 3).Select(_ => ReceiveOneByte(s)).ToList();
        Green.Sleep(20);
        c.Send("WXYZ"u8);
        // The hub keeps busy meanwhile, so anything that waits for the data elsewhere (a second reader on .NET's engine)
        // would take it before the reactor is polled.
        HoldTheBaton();
        Greenlet<string>[] all = [first, .. later];
        Assert.That(all.Select(g => g.Get(TimeSpan.FromSeconds(10))), Is.EqualTo(new[] { "W", "X", "Y", "Z" }));
    }

    [Test]
    public void A_receive_cancelled_or_killed_while_it_waits_for_its_turn_takes_no_bytes_and_the_next_one_gets_them()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        using var cancel = new CancellationTokenSource();
        var first = ReceiveOneByte(s);
        Green.Sleep(20);
        var cancelled = ReceiveOneByte(s, cancel.Token);
        var killed = ReceiveOneByte(s);
        var last = ReceiveOneByte(s);
        Green.Sleep(20);
        cancel.Cancel();
        killed.Kill(timeout: TimeSpan.FromSeconds(5));
        Assert.That(killed.Dead, Is.True, "a kill ends a receive queued for its turn at once");
        Assert.That(((Greenlet)killed).Value, Is.InstanceOf<GreenletExit>());
        c.Send("AB"u8);
        Assert.That(first.Get(TimeSpan.FromSeconds(10)), Is.EqualTo("A"));
        Assert.That(last.Get(TimeSpan.FromSeconds(10)), Is.EqualTo("B"));
        cancelled.Join(TimeSpan.FromSeconds(10));
        Assert.That(cancelled.Exception, Is.InstanceOf<OperationCanceledException>());
    }

    [Test]
    public void Receive_and_send_on_a_stackless_greenlet_complete_in_order_through_the_reactor()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var echo = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[64];
            while (true)
            {
                int n = await s.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
                if (n == 0) return;
                await s.SendAsync(buffer.AsMemory(0, n), SocketFlags.None);
            }
        });
        var replies = new List<string>();
        bool offPool = true;
        var talker = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[64];
            for (int i = 0; i < 50; i++)
            {
                var message = Encoding.ASCII.GetBytes($"m{i:D3}");
                await c.SendAsync(message, SocketFlags.None);
                int got = 0;
                while (got < message.Length)
                {
                    int n = await c.ReceiveAsync(new ArraySegment<byte>(buffer, got, buffer.Length - got), SocketFlags.None);
                    offPool &= !Thread.CurrentThread.IsThreadPoolThread;
                    got += n;
                }
                replies.Add(Encoding.ASCII.GetString(buffer, 0, got));
            }
            c.Shutdown(SocketShutdown.Send);
        });
        Green.JoinAll([talker, echo], raiseError: true);
        Assert.That(replies, Is.EqualTo(Enumerable.Range(0, 50).Select(i => $"m{i:D3}")));
        Assert.That(offPool, Is.True, "every continuation ran on the hub");
        Assert.That(HubUnderTest.Reactor!.RegistrationCount, Is.GreaterThanOrEqualTo(2), "both sockets waited on the hub's reactor");
    }

    [Test]
    public void NetworkStream_and_StreamReader_reads_and_writes_go_through_the_reactor_without_thread_pool_work()
    {
        var (client, server) = Pair();
        using var clientStream = new NetworkStream(client, ownsSocket: true);
        using var serverStream = new NetworkStream(server, ownsSocket: true);
        const int rounds = 400;
        var echo = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[256];
            while (true)
            {
                int n = await serverStream.ReadAsync(buffer);
                if (n == 0) return;
                await serverStream.WriteAsync(buffer.AsMemory(0, n));
            }
        });
        var lines = new List<string>();
        long before = ThreadPool.CompletedWorkItemCount;
        var talker = Green.SpawnAsync(async () =>
        {
            using var reader = new StreamReader(clientStream, leaveOpen: true);
            for (int i = 0; i < rounds; i++)
            {
                await clientStream.WriteAsync(Encoding.ASCII.GetBytes($"line {i}\n"));
                lines.Add((await reader.ReadLineAsync())!);
            }
            client.Shutdown(SocketShutdown.Send);
        });
        Green.JoinAll([talker, echo], raiseError: true);
        long poolItems = ThreadPool.CompletedWorkItemCount - before;
        Assert.That(lines, Is.EqualTo(Enumerable.Range(0, rounds).Select(i => $"line {i}")));
        // On the reactor no completion is a thread-pool work item; the bound leaves room for whatever else the process
        // does meanwhile.
        Assert.That(poolItems, Is.LessThan(rounds / 4), $"{poolItems} thread-pool work items for {rounds} round trips");
    }

    [Test]
    public void A_library_continuation_that_takes_a_lock_a_released_greenlet_won_does_not_stop_the_hub([Range(1, 5)] int round)
    {
        // A stackful greenlet waits for a monitor with the baton released; when the plain thread holding it lets go, the
        // greenlet's thread wins it and queues for the baton while holding it. Meanwhile a stackless greenlet's read
        // completes into library code that awaited with ConfigureAwait(false) and then wants the same monitor. Run
        // inside the reactor's poll, that code could not release the baton: it waited for the greenlet, which waited
        // for the baton. As a step of the stackless greenlet it waits with the baton released, like any greenlet code.
        var (client, server) = Pair();
        using var clientStream = new NetworkStream(client, ownsSocket: true);
        using var serverStream = new NetworkStream(server, ownsSocket: true);
        var gate = new object();
        var holding = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            lock (gate)
            {
                holding.Set();
                Thread.Sleep(100); // the stackful greenlet starts waiting for the monitor meanwhile
                client.Send([1]); // the stackless greenlet's read completes while the monitor is still held
                Thread.Sleep(100); // and its continuation starts waiting for it too
            }
        });
        thread.Start();
        holding.Wait();
        var log = new List<string>();
        var stackful = Green.Spawn(() => { lock (gate) log.Add("stackful"); });
        var stackless = Green.SpawnAsync(async () =>
        {
            bool got = await TakeAfterRead(serverStream, gate, TimeSpan.FromSeconds(3));
            log.Add(got ? "stackless" : "stackless timed out");
        });
        Green.JoinAll([stackful, stackless], raiseError: true);
        thread.Join();
        Assert.That(log, Is.EquivalentTo(new[] { "stackful", "stackless" }), "both got the monitor, in whichever order");
    }

    [Test]
    public void HttpClientCallsInTaskWhenAllOnAHubGroupAllFinish()
    {
        // Each request's continuations are steps of its greenlet, and they meet the timer queue's lock (HttpClient's
        // timeout) that the other hub's steps and pool threads hold: two steps of one greenlet then wait for it with
        // the baton released at the same time (Hub.Blocking.cs). This hung one run in three before each got a park
        // of its own.
        using var server = SlowServer.Http(TimeSpan.Zero, "ok");
        using var http = new HttpClient();
        var url = $"http://127.0.0.1:{server.Port}/";
        using var group = new HubGroup(2);
        var greenlets = Enumerable.Range(0, 40).Select(_ => group.SpawnAsync(async () =>
        {
            for (int round = 0; round < 10; round++)
            {
                var both = await Task.WhenAll(http.GetStringAsync(url), http.GetStringAsync(url));
                Assert.That(both, Is.EqualTo(new[] { "ok", "ok" }));
            }
        })).ToList();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (greenlets.Any(g => !g.Dead) && DateTime.UtcNow < deadline) Green.Sleep(10);
        Assert.That(greenlets.Count(g => !g.Dead), Is.Zero, "no greenlet hangs");
        Assert.That(greenlets.Where(g => !g.Successful).Select(g => g.Exception?.ToString()), Is.Empty);
    }

    /// <summary>Library code as HttpClient's is written: a read awaited with ConfigureAwait(false), then a monitor
    /// (bounded here, so that a hub that cannot move fails the test rather than hanging it).</summary>
    private static async Task<bool> TakeAfterRead(NetworkStream stream, object gate, TimeSpan bound)
    {
        await stream.ReadAsync(new byte[1]).ConfigureAwait(false);
        if (!Monitor.TryEnter(gate, bound)) return false;
        Monitor.Exit(gate);
        return true;
    }

    [Test]
    public void A_StreamReader_line_arriving_in_pieces_is_read_whole_and_in_order()
    {
        var (client, server) = Pair();
        using var clientStream = new NetworkStream(client, ownsSocket: true);
        using var s = server;
        const int lines = 40, pieces = 4;
        var read = new List<string>();
        bool offPool = true;
        var reader = Green.SpawnAsync(async () =>
        {
            using var text = new StreamReader(clientStream, leaveOpen: true);
            for (int i = 0; i < lines; i++)
            {
                read.Add((await text.ReadLineAsync())!);
                offPool &= !Thread.CurrentThread.IsThreadPoolThread;
            }
        });
        var writer = Green.SpawnAsync(async () =>
        {
            for (int i = 0; i < lines; i++)
            {
                var line = Encoding.ASCII.GetBytes($"line number {i:D4} in {pieces} pieces\n");
                int size = (line.Length + pieces - 1) / pieces;
                for (int at = 0; at < line.Length; at += size)
                {
                    await s.SendAsync(line.AsMemory(at, Math.Min(size, line.Length - at)), SocketFlags.None);
                    await Green.SleepAsync(TimeSpan.FromMilliseconds(1)); // the reader waits for the next piece
                }
            }
        });
        Green.JoinAll([reader, writer], raiseError: true);
        Assert.That(read, Is.EqualTo(Enumerable.Range(0, lines).Select(i => $"line number {i:D4} in {pieces} pieces")));
        Assert.That(offPool, Is.True, "the greenlet's own continuations ran on the hub");
    }

    /// <summary>A context of the kind UI frameworks install: not the default one.</summary>
    private sealed class ForeignContext : SynchronizationContext
    {
    }

    [Test]
    public void Completions_stay_on_the_hub_when_the_reactor_is_polled_under_a_foreign_synchronization_context()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        const int rounds = 300;
        var echo = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[16];
            int n;
            while ((n = await s.ReceiveAsync(buffer.AsMemory(), SocketFlags.None)) > 0) await s.SendAsync(buffer.AsMemory(0, n), SocketFlags.None);
        });
        bool offPool = true;
        var talker = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[16];
            for (int i = 0; i < rounds; i++)
            {
                await c.SendAsync(new byte[] { (byte)i }.AsMemory(), SocketFlags.None);
                await c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
                offPool &= !Thread.CurrentThread.IsThreadPoolThread;
            }
            c.Shutdown(SocketShutdown.Send);
        });
        // Legacy code on a stackful greenlet under a UI-style context: its carrier runs the scheduler, and so polls the
        // reactor, with that context current whenever the greenlet yields or waits.
        var legacy = Green.Spawn(() =>
        {
            SynchronizationContext.SetSynchronizationContext(new ForeignContext());
            while (!talker.Dead)
            {
                Thread.Sleep(0); // patched: yields to the other greenlets
                Thread.Sleep(1);
            }
        });
        long before = ThreadPool.CompletedWorkItemCount;
        Green.JoinAll([talker, echo, legacy], raiseError: true);
        long poolItems = ThreadPool.CompletedWorkItemCount - before;
        Assert.That(offPool, Is.True);
        Assert.That(poolItems, Is.LessThan(rounds / 4), $"{poolItems} thread-pool work items for {rounds} round trips");
    }

    [Test]
    public void Partial_reads_return_what_is_there_and_the_end_of_the_stream_returns_0()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var reads = Green.SpawnAsync(async () =>
        {
            var sizes = new List<int>();
            var buffer = new byte[4];
            while (true)
            {
                int n = await c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
                sizes.Add(n);
                if (n == 0) return sizes;
            }
        });
        Green.Sleep(20); // the reader waits on the reactor first
        s.Send(Encoding.ASCII.GetBytes("0123456789"));
        s.Shutdown(SocketShutdown.Send);
        Assert.That(reads.Get(), Is.EqualTo(new[] { 4, 4, 2, 0 }));
    }

    [Test]
    public void A_zero_byte_receive_waits_for_data_and_consumes_none()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var order = new List<string>();
        var reader = Green.SpawnAsync(async () =>
        {
            int zero = await c.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
            order.Add($"ready {zero}");
            var buffer = new byte[8];
            int n = await c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
            order.Add(Encoding.ASCII.GetString(buffer, 0, n));
        });
        Green.Sleep(20);
        order.Add("send");
        s.Send(Encoding.ASCII.GetBytes("abc"));
        reader.Join();
        Assert.That(reader.Successful, Is.True, () => reader.Exception?.ToString() ?? "");
        Assert.That(order, Is.EqualTo(new[] { "send", "ready 0", "abc" }));
    }

    [Test]
    public void A_reset_connection_faults_with_the_originals_SocketError_and_NetworkStream_wraps_it_the_same_way()
    {
        static async Task<(SocketError Socket, string StreamType, string StreamMessage, SocketError StreamInner, bool Connected)> Scenario(Func<Task> afterWait, Socket c1, Socket c2, Socket s1, Socket s2)
        {
            var pending = Failure(() => c1.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None).AsTask());
            var stream = new NetworkStream(c2);
            var pendingStream = Failure(() => stream.ReadAsync(new byte[8]).AsTask());
            await afterWait();
            foreach (var s in new[] { s1, s2 })
            {
                s.LingerState = new LingerOption(true, 0);
                s.Close(); // RST
            }
            var socketError = (SocketException)(await pending)!;
            var streamError = (await pendingStream)!;
            return (socketError.SocketErrorCode, streamError.GetType().Name, streamError.Message,
                ((SocketException)streamError.InnerException!).SocketErrorCode, c1.Connected);
        }

        var (a1, b1) = Pair();
        var (a2, b2) = Pair();
        var onHub = Green.SpawnAsync(() => Scenario(() => Green.SleepAsync(TimeSpan.FromMilliseconds(20)), a1, a2, b1, b2)).Get();
        var (x1, y1) = Pair();
        var (x2, y2) = Pair();
        var original = OffHub(() => Scenario(() => Task.Delay(20), x1, x2, y1, y2));
        foreach (var s in new[] { a1, a2, x1, x2 }) s.Dispose();
        Assert.That(onHub, Is.EqualTo(original));
        Assert.That(onHub.Socket, Is.EqualTo(SocketError.ConnectionReset));
        Assert.That(onHub.StreamType, Is.EqualTo(nameof(IOException)));
    }

    [Test]
    public void Closing_the_socket_under_a_pending_receive_faults_like_the_original()
    {
        static async Task<(string Type, SocketError Error)> Scenario(Socket c, Func<Task> pause)
        {
            var pending = Failure(() => c.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None).AsTask());
            await pause();
            c.Dispose();
            var e = (await pending)!;
            return (e.GetType().Name, (e as SocketException)?.SocketErrorCode ?? SocketError.SocketError);
        }

        var (a, b) = Pair();
        var onHub = Green.SpawnAsync(() => Scenario(a, () => Green.SleepAsync(TimeSpan.FromMilliseconds(20)))).Get();
        var (x, y) = Pair();
        var original = OffHub(() => Scenario(x, () => Task.Delay(20)));
        b.Dispose();
        y.Dispose();
        Assert.That(onHub, Is.EqualTo(original));
    }

    [Test]
    public void Sending_to_a_reset_peer_faults_like_the_original()
    {
        static async Task<(string Type, SocketError Error)> Scenario(Socket c, Socket s)
        {
            s.LingerState = new LingerOption(true, 0);
            s.Close();
            await Task.Yield();
            var data = new byte[64 * 1024];
            for (int i = 0; i < 100; i++)
            {
                var e = await Failure(() => c.SendAsync(data.AsMemory(), SocketFlags.None).AsTask());
                if (e is SocketException se) return (e.GetType().Name, se.SocketErrorCode);
                if (e != null) return (e.GetType().Name, SocketError.SocketError);
            }
            return ("none", SocketError.Success);
        }

        var (a, b) = Pair();
        var onHub = Green.SpawnAsync(() => Scenario(a, b)).Get();
        var (x, y) = Pair();
        var original = OffHub(() => Scenario(x, y));
        a.Dispose();
        x.Dispose();
        Assert.That(onHub, Is.EqualTo(original));
    }

    [Test]
    public void A_large_send_waits_for_room_on_the_reactor_and_arrives_intact()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var data = new byte[8 << 20];
        new Random(7).NextBytes(data);
        var sender = Green.SpawnAsync(async () => await c.SendAsync(data.AsMemory(), SocketFlags.None));
        var receiver = Green.SpawnAsync(async () =>
        {
            var received = new byte[data.Length];
            int got = 0;
            while (got < received.Length)
            {
                int n = await s.ReceiveAsync(received.AsMemory(got, Math.Min(1000, received.Length - got)), SocketFlags.None);
                if (n == 0) break;
                got += n;
                if (got % 7 == 0) await Green.SleepAsync(TimeSpan.Zero);
            }
            return received;
        });
        Assert.That(sender.Get(), Is.EqualTo(data.Length), "SendAsync on a stream socket sends everything");
        Assert.That(receiver.Get(), Is.EqualTo(data));
    }

    [Test]
    public void A_cancelled_token_ends_a_pending_receive_like_the_original_and_loses_no_data()
    {
        static async Task<(string Type, bool TokenMatches, string Later)> Scenario(Socket c, Socket s, Func<Task> pause)
        {
            using var cancel = new CancellationTokenSource();
            var pending = Failure(() => c.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None, cancel.Token).AsTask());
            await pause();
            cancel.Cancel();
            var e = (await pending)!;
            s.Send(Encoding.ASCII.GetBytes("after"));
            var buffer = new byte[8];
            int n = await c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
            return (e.GetType().Name, ((OperationCanceledException)e).CancellationToken == cancel.Token, Encoding.ASCII.GetString(buffer, 0, n));
        }

        var (a, b) = Pair();
        var onHub = Green.SpawnAsync(() => Scenario(a, b, () => Green.SleepAsync(TimeSpan.FromMilliseconds(20)))).Get();
        var (x, y) = Pair();
        var original = OffHub(() => Scenario(x, y, () => Task.Delay(20)));
        foreach (var s in new[] { a, b, x, y }) s.Dispose();
        Assert.That(onHub, Is.EqualTo(original));
        Assert.That(onHub.Later, Is.EqualTo("after"));
    }

    [Test]
    public void An_already_cancelled_token_faults_like_the_original()
    {
        static async Task<string> Scenario(Socket c)
        {
            using var cancel = new CancellationTokenSource();
            cancel.Cancel();
            return (await Failure(() => c.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None, cancel.Token).AsTask()))!.GetType().Name;
        }

        var (a, b) = Pair();
        var onHub = Green.SpawnAsync(() => Scenario(a)).Get();
        var (x, y) = Pair();
        var original = OffHub(() => Scenario(x));
        foreach (var s in new[] { a, b, x, y }) s.Dispose();
        Assert.That(onHub, Is.EqualTo(original));
    }

    [Test]
    public void Killing_a_greenlet_that_awaits_a_receive_ends_it_at_once_and_leaves_the_data_for_the_next_reader()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        bool reachedFinally = false;
        var reader = Green.SpawnAsync(async () =>
        {
            try
            {
                await c.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None);
            }
            finally
            {
                reachedFinally = true;
            }
        });
        Green.Sleep(20);
        reader.Kill();
        Assert.That(reader.Dead, Is.True);
        Assert.That(reachedFinally, Is.True);
        Assert.That(reader.Value, Is.InstanceOf<GreenletExit>(), "killed with the default GreenletExit");
        s.Send(Encoding.ASCII.GetBytes("kept"));
        var next = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[8];
            int n = await c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
            return Encoding.ASCII.GetString(buffer, 0, n);
        });
        Assert.That(next.Get(), Is.EqualTo("kept"));
    }

    [Test]
    public void A_GreenTimeout_ends_a_pending_receive()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        var reader = Green.SpawnAsync(async () =>
        {
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(30));
            await c.ReceiveAsync(new byte[8].AsMemory(), SocketFlags.None);
        });
        reader.Join();
        Assert.That(reader.Exception, Is.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void ConnectAsync_connects_on_the_reactor_and_a_refused_connect_faults_like_the_original()
    {
        using var listener = Listener();
        var connected = Green.SpawnAsync(async () =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(listener.LocalEndPoint!);
            return socket;
        }).Get();
        using (connected)
        using (var accepted = listener.Accept())
        {
            Assert.That(connected.Connected, Is.True);
            Assert.That(connected.RemoteEndPoint, Is.EqualTo(listener.LocalEndPoint));
            Assert.That(accepted.RemoteEndPoint, Is.EqualTo(connected.LocalEndPoint));
        }

        int port;
        using (var closed = Listener()) port = ((IPEndPoint)closed.LocalEndPoint!).Port;
        static async Task<(string Type, SocketError Error, bool Connected)> Refused(int port)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            var e = await Failure(() => socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), CancellationToken.None).AsTask());
            return (e!.GetType().Name, ((SocketException)e).SocketErrorCode, socket.Connected);
        }
        var onHub = Green.SpawnAsync(() => Refused(port)).Get();
        var original = OffHub(() => Refused(port));
        Assert.That(onHub, Is.EqualTo(original));
        Assert.That(onHub.Error, Is.EqualTo(SocketError.ConnectionRefused));
    }

    /// <summary>A listener whose accept queue is full, so the kernel drops a connect's SYN and sends it again about a
    /// second later; <c>MakeRoom</c> empties the queue, so that next try gets an answer and the handshake completes.</summary>
    private sealed class FullListener : IDisposable
    {
        private readonly Socket _listener = Listener(backlog: 0);
        private readonly List<Socket> _fillers = [];

        public FullListener()
        {
            for (int i = 0; i < 3; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { Blocking = false };
                _fillers.Add(filler);
                try { filler.Connect(_listener.LocalEndPoint!); } catch (SocketException) { }
            }
        }

        public EndPoint EndPoint => _listener.LocalEndPoint!;

        public void MakeRoom()
        {
            foreach (var f in _fillers) f.Dispose();
            _listener.Blocking = false;
            for (int i = 0; i < 4; i++) try { _listener.Accept().Dispose(); } catch (SocketException) { }
        }

        public void Dispose()
        {
            foreach (var f in _fillers) f.Dispose();
            _listener.Dispose();
        }
    }

    [Test]
    public void A_cancelled_connect_leaves_the_socket_unconnected_as_the_original_does()
    {
        // The kernel finishes the handshake after the cancellation (the socket becomes writable): the cancelled socket
        // must not report itself connected.
        static async Task<(string? Failure, bool ConnectedAfter)> CancelledConnect()
        {
            using var listener = new FullListener();
            await Task.Delay(100);
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
            var e = await Failure(() => socket.ConnectAsync(listener.EndPoint, cancel.Token).AsTask());
            listener.MakeRoom();
            await Task.Delay(2500);
            return (e?.GetType().Name, socket.Connected);
        }
        var original = OffHub(CancelledConnect);
        var onHub = Green.SpawnAsync(CancelledConnect).Get();
        Assert.That(onHub, Is.EqualTo(original));
        Assert.That(onHub, Is.EqualTo(((string?)"OperationCanceledException", false)));
    }

    [Test]
    public void A_blocking_connect_abandoned_by_a_kill_leaves_the_socket_unconnected()
    {
        using var listener = new FullListener();
        Green.Sleep(100);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connecting = Green.Spawn(() => socket.Connect(listener.EndPoint));
        Green.Sleep(300);
        connecting.Kill();
        listener.MakeRoom();
        Green.Sleep(2500);
        Assert.That(socket.Connected, Is.False);
    }

    [Test]
    public void Many_stackless_greenlets_echo_concurrently_on_one_hub()
    {
        const int connections = 200, rounds = 20;
        using var listener = Listener(connections);
        var servers = new List<Greenlet>();
        var acceptor = Green.Spawn(() =>
        {
            for (int i = 0; i < connections; i++)
            {
                var connection = listener.Accept();
                servers.Add(Green.SpawnAsync(async () =>
                {
                    using var stream = new NetworkStream(connection, ownsSocket: true);
                    var buffer = new byte[32];
                    int n;
                    while ((n = await stream.ReadAsync(buffer)) > 0) await stream.WriteAsync(buffer.AsMemory(0, n));
                }));
            }
        });
        var clients = Enumerable.Range(0, connections).Select(i => Green.SpawnAsync(async () =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(listener.LocalEndPoint!);
            var buffer = new byte[32];
            int ok = 0;
            for (int r = 0; r < rounds; r++)
            {
                var message = Encoding.ASCII.GetBytes($"{i}:{r};");
                await socket.SendAsync(message, SocketFlags.None);
                int got = 0;
                while (got < message.Length) got += await socket.ReceiveAsync(buffer.AsMemory(got), SocketFlags.None);
                if (Encoding.ASCII.GetString(buffer, 0, got) == $"{i}:{r};") ok++;
            }
            return ok;
        })).ToList();
        Green.JoinAll(clients, raiseError: true);
        acceptor.Join();
        Green.JoinAll(servers, raiseError: true);
        Assert.That(clients.Select(g => g.Get()), Is.All.EqualTo(rounds));
    }

    [Test]
    public void On_a_stackful_greenlet_the_async_calls_are_the_originals()
    {
        var (client, server) = Pair();
        using var c = client;
        using var s = server;
        int registrations = HubUnderTest.Reactor!.RegistrationCount;
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[8];
            int n = Green.Wait(c.ReceiveAsync(buffer.AsMemory(), SocketFlags.None).AsTask());
            return Encoding.ASCII.GetString(buffer, 0, n);
        });
        Green.Sleep(20);
        s.Send(Encoding.ASCII.GetBytes("plain"));
        Assert.That(reader.Get(), Is.EqualTo("plain"));
        Assert.That(HubUnderTest.Reactor!.RegistrationCount, Is.EqualTo(registrations), "the client socket never waited on the reactor");
    }
}
