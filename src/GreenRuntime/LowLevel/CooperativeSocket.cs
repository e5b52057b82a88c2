// The one cooperative socket layer: what the patched Socket methods and the servers both run on a greenlet.
//
// Glossary: the *reactor path* is the non-blocking system call (MSG_DONTWAIT) retried after the hub's epoll
// reactor reports readiness (Io/SocketIo.cs, Linux x64); the *async path* is .NET's own asynchronous socket
// operation, the greenlet parked until its completion is posted to the hub's inbox; an operation is
// *interrupted* when the park ends without it (a kill, a GreenTimeout, the call's own timeout).
//
// Design, per operation:
//   1. Receive and Send on stream sockets take the reactor path: nothing is left running after a timeout or a
//      kill, so the caller's buffer is the caller's again at once.
//   2. Datagram (message) sockets: recv/recvfrom with MSG_DONTWAIT where the reactor can make the call, otherwise the
//      socket's own receive made non-blocking; on EAGAIN a wait on the reactor (CooperativeSocket.Datagram.cs): another
//      reader may take the datagram between the wake and the call.
//   3. Where the reactor declines (no reactor on this platform, flags it does not pass through, a handle it
//      cannot watch): a receive waits until the socket is readable with an async 1-byte
//      peek, which consumes nothing (so a kill or a timeout loses no data and never writes into the caller's
//      buffer later), then receives, which returns at once; a send sends a pooled copy with SendAsync.
//   4. An interrupted async operation is cancelled; one that may still read or write memory the unwinding
//      frame owns is waited for (a short real wait inside Parking.SuppressCooperation) before the exception
//      propagates: a pooled buffer is never handed back while the kernel may still touch it.
//   5. The final calls go through Parking.SuppressCooperation, so with Patch.All() applied they run the
//      original Socket methods instead of coming back here.
// Errors are reported as the Socket's own SocketError codes (out parameters, as Socket.Receive(..., out
// SocketError) does); exceptions are the ones the Socket itself throws (a disposed socket, bad arguments).
//
// Rejected: a Poll(0) before every call (an extra system call on the fast path); ReceiveAsync into the
// caller's buffer as the fallback (an interrupted receive could still write into it after the call
// returned); a per-socket wrapper object (the patched methods only have the Socket).

using System.Net.Sockets;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

/// <summary>
/// Cooperative socket operations for a greenlet: they park only the calling greenlet (on the hub's reactor where
/// there is one, otherwise on .NET's asynchronous socket operations), honour a timeout, and stop at once when the
/// greenlet is killed. The layer under the patched <see cref="Socket"/> methods and the servers.
/// </summary>
/// <remarks>
/// <para>Hub-only: call them where <see cref="Parking.ParkingHub"/> is not null (a greenlet that may park); elsewhere
/// use the socket's own blocking calls. They work on blocking and non-blocking sockets alike and leave
/// <see cref="Socket.Blocking"/> as it was (the file descriptor itself may be switched to non-blocking mode, as by any
/// .NET asynchronous socket operation).</para>
/// <para>Timeouts: <c>null</c> or <see cref="Timeout.InfiniteTimeSpan"/> means none; an elapsed timeout is reported as
/// <see cref="SocketError.TimedOut"/>. A kill or an expired <see cref="GreenTimeout"/> is thrown, as at every blocking
/// point.</para>
/// </remarks>
public static partial class CooperativeSocket
{
    // The peek target of the async readability wait. Concurrent peeks may write it at the same time; nobody reads it.
    private static readonly byte[] s_peekByte = new byte[1];

    /// <summary>Whether the calling hub waits for sockets on its own epoll reactor (Linux x64), rather than through .NET's
    /// asynchronous socket engine. Hub-only.</summary>
    public static bool HasReactor => SocketIo.IsAvailable(RequireHub());

    /// <summary>
    /// Receives at most <paramref name="buffer"/>.Length bytes, parking while nothing is there.
    /// </summary>
    /// <param name="socket">A connected socket.</param>
    /// <param name="buffer">Where the data goes; nothing is written into it after the call returned.</param>
    /// <param name="flags">As for <see cref="Socket.Receive(Span{byte}, SocketFlags, out SocketError)"/>.</param>
    /// <param name="timeout">How long to wait for data.</param>
    /// <param name="error"><see cref="SocketError.Success"/>, <see cref="SocketError.TimedOut"/>, or the socket's error.</param>
    /// <returns>The bytes received; 0 at the end of the stream or on an error.</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    /// <exception cref="ObjectDisposedException">The socket was disposed before the call.</exception>
    public static int Receive(Socket socket, Span<byte> buffer, SocketFlags flags, TimeSpan? timeout, out SocketError error)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = RequireHub();
        if (SocketIo.TryReceive(hub, socket, buffer, flags, timeout, out int received, out error))
            return received;
        if (IsMessageSocket(socket) && SocketIo.IsSocket(socket))
        {
            // MSG_DONTWAIT per call: the socket's mode stays as it is for every other user of it.
            if (!buffer.IsEmpty && SocketIo.TryReceiveMessage(hub, socket, buffer, flags, timeout, out int got, out error))
                return got;
            var call = new SpanReceive { Buffer = buffer, Flags = flags };
            var outcome = ReceiveWhenReadable(socket, timeout, ref call,
                static (Socket s, ref SpanReceive c) =>
                {
                    c.Received = s.Receive(c.Buffer, c.Flags, out var e);
                    return e;
                });
            error = outcome;
            return outcome == SocketError.Success ? call.Received : 0;
        }
        var ready = WaitReadable(hub, socket, timeout);
        if (ready != SocketError.Success)
        {
            error = ready;
            return 0;
        }
        using (Parking.SuppressCooperation())
            return socket.Receive(buffer, flags, out error); // readable: returns at once
    }

    private ref struct SpanReceive
    {
        public Span<byte> Buffer;
        public SocketFlags Flags;
        public int Received;
    }

    /// <summary>
    /// Parks until a receive on <paramref name="socket"/> would not block: data, the end of the stream or an error is
    /// there (trio's <c>wait_readable</c>). Consumes no data, for any socket type.
    /// </summary>
    /// <returns><see cref="SocketError.Success"/> when a receive can go ahead; <see cref="SocketError.TimedOut"/>; or an
    /// error the socket reported meanwhile (which a receive would otherwise have reported).</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static SocketError WaitReadable(Socket socket, TimeSpan? timeout)
    {
        ArgumentNullException.ThrowIfNull(socket);
        return WaitReadable(RequireHub(), socket, timeout);
    }

    private static SocketError WaitReadable(Hub hub, Socket socket, TimeSpan? timeout)
    {
        if (SocketIo.TryWaitReadable(hub, socket, timeout, out var readable))
            return readable;
        // A pipe wrapped in a Socket cannot be peeked at: without the reactor its read waits as the original does.
        if (!SocketIo.IsSocket(socket)) return SocketError.Success;
        using var cancel = new CancellationTokenSource();
        Task<int> peek;
        try
        {
            peek = socket.ReceiveAsync(s_peekByte, SocketFlags.Peek, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            return SocketError.Success; // the receive that follows reports the socket's state exactly
        }
        // No drain on a kill: the peek writes only into s_peekByte.
        if (!peek.IsCompleted && !Park(peek, timeout, cancel, drain: false))
        {
            CancelQuietly(cancel);
            WaitBlocking(peek);
            if (!peek.IsCompletedSuccessfully) return SocketError.TimedOut;
        }
        if (peek.IsFaulted && peek.Exception!.InnerException is SocketException se && se.SocketErrorCode != SocketError.OperationAborted)
            return se.SocketErrorCode; // the peek consumed a pending error (e.g. a reset): report it rather than lose it
        return SocketError.Success;
    }

    /// <summary>
    /// Waits — without parking, so a stackless greenlet holds no thread meanwhile — until a receive on
    /// <paramref name="socket"/> would not block: data, the end of the stream or an error is there. Consumes no data.
    /// </summary>
    /// <returns>A task with <see cref="SocketError.Success"/> when a receive can go ahead, <see cref="SocketError.TimedOut"/>,
    /// <see cref="SocketError.OperationAborted"/> when the socket was closed meanwhile, or another error the socket reported;
    /// cancelled by <paramref name="cancellationToken"/> (pass the greenlet's <see cref="Greenlet.CancellationToken"/> so that a
    /// kill ends the wait).</returns>
    /// <remarks>The task completes on the baton holder, inside the reactor's poll. An await that captures the greenlet's
    /// synchronization context (a plain <c>await</c> in a stackless greenlet) resumes as a step of the greenlet; a
    /// continuation that asked for no context (<c>ConfigureAwait(false)</c>, <c>ContinueWith</c> with
    /// <c>ExecuteSynchronously</c>) runs right there, as scheduler code that cannot release the baton, so it must not
    /// block or wait for a lock.</remarks>
    /// <exception cref="InvalidOperationException">Not on a hub's thread.</exception>
    /// <exception cref="InvalidOperationException">The task faults with it when another such wait for the same socket is in progress.</exception>
    public static Task<SocketError> WaitReadableAsync(Socket socket, TimeSpan? timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = Hub.Current;
        hub.AssertOnHub();
        try
        {
            if (SocketIo.WaitReadableAsync(hub, socket, timeout, cancellationToken) is { } onReactor) return onReactor;
        }
        catch (InvalidOperationException e)
        {
            return Task.FromException<SocketError>(e);
        }
        return PeekAsync(socket, timeout, cancellationToken);

        // No reactor here (or the socket is not one it can watch): .NET's asynchronous 1-byte peek, which consumes nothing.
        static async Task<SocketError> PeekAsync(Socket socket, TimeSpan? timeout, CancellationToken cancellationToken)
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            if (timeout is { } t && t != Timeout.InfiniteTimeSpan) limit.CancelAfter(t < TimeSpan.Zero ? TimeSpan.Zero : t);
            try
            {
                await socket.ReceiveAsync(s_peekByte, SocketFlags.Peek, limit.Token);
                return SocketError.Success;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return SocketError.TimedOut;
            }
            catch (ObjectDisposedException)
            {
                return SocketError.OperationAborted;
            }
            catch (SocketException e)
            {
                return e.SocketErrorCode;
            }
        }
    }

    /// <summary>
    /// One receive that never waits: what is there already, or -1 when nothing is there yet (the receive would block).
    /// </summary>
    /// <param name="socket">A connected stream socket.</param>
    /// <param name="buffer">Where the data goes.</param>
    /// <param name="error"><see cref="SocketError.Success"/> or the socket's error (the result is then 0).</param>
    /// <returns>The bytes received (0 at the end of the stream or on an error), or -1.</returns>
    /// <exception cref="InvalidOperationException">Not on a hub's thread.</exception>
    public static int ReceiveNow(Socket socket, Span<byte> buffer, out SocketError error)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = Hub.Current;
        hub.AssertOnHub();
        if (SocketIo.TryReceiveNow(hub, socket, buffer, out error) is { } n) return n;
        // Without the reactor's MSG_DONTWAIT: receive only when the kernel says a receive returns at once (bytes are
        // there, or the socket is readable with none: the end of the stream or an error, which the receive reports).
        error = SocketError.Success;
        using (Parking.SuppressCooperation())
        {
            if (socket.Available == 0 && !socket.Poll(0, SelectMode.SelectRead)) return -1;
            return socket.Receive(buffer, SocketFlags.None, out error);
        }
    }

    /// <summary>
    /// Ends at once the waits of greenlets (and stackless waits) on <paramref name="socket"/>, on whichever hub they are:
    /// call it right after closing a socket that other greenlets may be blocked on, as closing a socket wakes the threads
    /// blocked in it. A parked receive or send then reports <see cref="SocketError.ConnectionAborted"/> on a stream
    /// socket and <see cref="SocketError.Interrupted"/> on others, as a blocked thread's does; an accept reports
    /// Interrupted. Under <c>Patch.All()</c> every <see cref="Socket.Dispose()"/> and <see cref="Socket.Close()"/> does this by itself.
    /// </summary>
    /// <remarks>Safe from any thread, on or off a hub. Nothing happens while the socket is still open (a
    /// <see cref="Socket"/> that does not own its handle) or when nobody waits on it. Without it the hub's reactor notices
    /// the closing within about 250 ms and ends the waits then.</remarks>
    public static void NotifyClosed(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        SocketIo.NotifyClosed(socket);
    }

    /// <summary><see cref="NotifyClosed(Socket)"/> for the socket whose handle <paramref name="handle"/> is: for code that
    /// closes the handle itself. (Reading <see cref="Socket.SafeHandle"/> changes how .NET treats a socket: prefer the
    /// other overload.)</summary>
    public static void NotifyClosed(SafeSocketHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Reactor.EndWaitsOnClosed(handle);
    }

    /// <summary>The hub the caller parks on, or the misuse exception.</summary>
    private static Hub RequireHub() =>
        Parking.ParkingHubSilent() ?? throw new InvalidOperationException(
            "Cooperative socket operations park the calling greenlet: call them on a greenlet that may park (Parking.ParkingHub() is not null). Off a hub, in a hub callback or inside SuppressCooperation use the socket's own blocking calls.");

    /// <summary>
    /// Parks until <paramref name="task"/> completes or the timeout elapses; on a kill, cancels it and (when
    /// <paramref name="drain"/>) waits for it to finish before the exception propagates.
    /// </summary>
    /// <returns>Whether the task completed (false: timed out, and the caller cancels it).</returns>
    private static bool Park(Task task, TimeSpan? timeout, CancellationTokenSource cancel, bool drain) =>
        Parking.WaitForTask(task, timeout, WaitReason.Socket, cancel, drain);

    private static void CancelQuietly(CancellationTokenSource cancel) => Parking.CancelQuietly(cancel);

    private static void WaitBlocking(Task task) => Parking.WaitBlocking(task);
}
