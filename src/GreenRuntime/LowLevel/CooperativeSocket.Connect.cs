using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

public static partial class CooperativeSocket
{
    /// <summary>
    /// Accepts one connection on <paramref name="listener"/>, parking the calling greenlet meanwhile.
    /// </summary>
    /// <param name="listener">A bound, listening socket.</param>
    /// <param name="cancellationToken">Cancels the accept (<see cref="OperationCanceledException"/>); the listener stays usable.</param>
    /// <returns>The accepted socket; the caller owns it.</returns>
    /// <remarks>Without a token, on the hub's reactor: the listener's accept(2) without waiting, parked while nothing is
    /// queued, so a kill or timeout can only end the wait, before anything was accepted. With a token (or without a
    /// reactor) it is .NET's AcceptAsync, parked: when the greenlet is killed meanwhile the pending accept is cancelled,
    /// and a connection it still produces in the race is closed (nobody is left to serve it).</remarks>
    /// <exception cref="SocketException">The accept failed (for example out of file descriptors).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park, or the socket is not listening.</exception>
    public static Socket Accept(Socket listener, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(listener);
        var hub = RequireHub();
        if (!cancellationToken.CanBeCanceled && SocketIo.IsAvailable(hub) && AcceptOnReactor(hub, listener) is { } accepted)
            return accepted;
        using var cancel = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken) : new CancellationTokenSource();
        ValueTask<Socket> pending;
        try
        {
            pending = listener.AcceptAsync(cancel.Token);
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException)
        {
            using (Parking.SuppressCooperation())
                return listener.Accept(); // not listening, wrong socket type...: the socket's own exception
        }
        if (pending.IsCompleted) return pending.GetAwaiter().GetResult();
        var task = pending.AsTask();
        try
        {
            Park(task, null, cancel, drain: false);
        }
        catch
        {
            task.ContinueWith(static t => { if (t.IsCompletedSuccessfully) t.Result.Dispose(); }, CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            throw;
        }
        return task.GetAwaiter().GetResult();
    }

    /// <summary>
    /// The accept of a blocking listener on the hub's reactor: accept(2) without waiting, and park until the listener is
    /// readable while nothing is queued. Null when the reactor cannot watch the listener (nothing was accepted then).
    /// </summary>
    /// <remarks>
    /// Why not AcceptAsync, as elsewhere: .NET's socket engine completes it on a thread-pool thread, so the greenlet woke
    /// only when a pool thread was free (800 ms while legacy code kept the pool busy), and a kill or timeout in that
    /// window closed a connection the kernel had already handed over, resetting a real client. Here a kill can only
    /// land in the park, before anything was accepted.
    /// <para>A TCP listener is accepted on with accept4 (SocketIo.TryAccept), <see cref="Socket.Blocking"/> untouched, so a
    /// plain thread's <see cref="Socket.Accept"/> on the same listener keeps waiting as it does among threads. Other
    /// listeners (Unix domain, whose accepted socket .NET gives the listener's endpoint bookkeeping) are switched to
    /// non-blocking mode for the one call of .NET's own Accept, with no park in between; a thread's Accept that starts in
    /// that instant reports WouldBlock. The accepted socket is blocking either way, as the original's is.</para>
    /// </remarks>
    private static Socket? AcceptOnReactor(Hub hub, Socket listener)
    {
        bool parked = false;
        while (true)
        {
            switch (SocketIo.TryAccept(listener, out var taken))
            {
                case SocketIo.Outcome.Done:
                    return taken;
                case SocketIo.Outcome.WouldBlock:
                    if (SocketIo.WaitUntilReady(hub, [(listener, false)], null, static () => true) is null && !parked)
                        return null;
                    parked = true;
                    continue;
            }
            // Greenlets of two hubs may accept on one listener. Suppressed: the gate's holder must not wait for the baton.
            using (Parking.SuppressCooperation())
            using (NonBlockingGate(listener).EnterScope())
            {
                bool blocking = listener.Blocking;
                try
                {
                    listener.Blocking = false;
                    var accepted = listener.Accept(); // a listener that does not listen throws here, as the original does
                    accepted.Blocking = true;
                    return accepted;
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.ConnectionAborted or SocketError.ConnectionReset)
                {
                    // Nothing queued (or the client gave up in between): wait for the next one.
                }
                catch (ObjectDisposedException) when (parked)
                {
                    // Closed while this greenlet waited: what a thread blocked in Accept sees.
                    throw new SocketException((int)SocketError.Interrupted);
                }
                finally
                {
                    RestoreBlocking(listener, blocking);
                }
            }
            // Not watchable: before any park, the caller's other path; after one, the listener was closed meanwhile (the
            // next attempt reports it).
            if (SocketIo.WaitUntilReady(hub, [(listener, false)], null, static () => true) is null && !parked)
                return null;
            parked = true;
        }
    }

    private static void RestoreBlocking(Socket listener, bool blocking)
    {
        try
        {
            listener.Blocking = blocking;
        }
        catch (ObjectDisposedException)
        {
            // closed by another thread during the accept: nothing to restore
        }
    }

    /// <summary>
    /// Connects <paramref name="socket"/> to <paramref name="remoteEndPoint"/>, parking the calling greenlet until the
    /// connection is established or fails. A <see cref="DnsEndPoint"/> is resolved cooperatively first.
    /// </summary>
    /// <remarks>On the reactor this is the non-blocking connect .NET itself supports, waited for on the hub's epoll set,
    /// which keeps the socket out of .NET's own socket engine afterwards; elsewhere it is <c>ConnectAsync</c>, parked.
    /// A kill cancels the connect (the socket is then unusable, as after a failed connect). A Unix-domain listener whose
    /// backlog is full is tried again every 1–20 ms until it has room, as a blocking connect waits for it.</remarks>
    /// <exception cref="SocketException">The connection failed (refused, unreachable...).</exception>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park, or the socket is listening.</exception>
    public static void Connect(Socket socket, EndPoint remoteEndPoint)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(remoteEndPoint);
        var hub = RequireHub();
        if (socket.SocketType == SocketType.Stream && remoteEndPoint is not DnsEndPoint && !socket.Connected
            && SocketIo.IsAvailable(hub) && ConnectOnReactor(hub, socket, remoteEndPoint))
            return;
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = socket.ConnectAsync(remoteEndPoint, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or ArgumentException)
        {
            using (Parking.SuppressCooperation())
                socket.Connect(remoteEndPoint); // the socket's own validation exception
            return;
        }
        Park(task, null, cancel, drain: true);
        task.GetAwaiter().GetResult();
    }

    /// <summary>
    /// Parks until <paramref name="socket"/> is writable, or reports an error, or <paramref name="timeout"/> elapses
    /// (trio's <c>wait_writable</c>): after a send that found the kernel's buffer full, or a non-blocking connect.
    /// </summary>
    /// <remarks>Readiness may be reported early (an edge the kernel signalled for another reason): retry the operation and
    /// wait again if it would still block. Without a reactor the socket is polled with zero timeouts, parking 1–20 ms
    /// between tries (.NET offers no writability notification).</remarks>
    /// <returns><see cref="SocketError.Success"/>, <see cref="SocketError.TimedOut"/>, or
    /// <see cref="SocketError.OperationAborted"/> when the socket was closed meanwhile.</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static SocketError WaitWritable(Socket socket, TimeSpan? timeout)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = RequireHub();
        switch (SocketIo.WaitWritableOnce(hub, socket, timeout))
        {
            case Readiness.Ready: return SocketError.Success;
            case Readiness.TimedOut: return SocketError.TimedOut;
            case Readiness.Closed: return SocketError.OperationAborted;
        }
        bool writable = Parking.PollUntil(() =>
        {
            using (Parking.SuppressCooperation())
                return socket.Poll(0, SelectMode.SelectWrite) || socket.Poll(0, SelectMode.SelectError);
        }, timeout is { } t && t != Timeout.InfiniteTimeSpan ? t : null);
        return writable ? SocketError.Success : SocketError.TimedOut;
    }

    /// <summary>
    /// The non-blocking connect .NET itself supports (Blocking = false, Connect throws WouldBlock, the Connected
    /// getter completes the bookkeeping once the socket is writable), waiting on the reactor. Unlike ConnectAsync it
    /// leaves the socket out of .NET's own epoll thread, which would otherwise wake for every packet the socket
    /// receives afterwards. Returns false, having done nothing, if the socket cannot be switched to non-blocking mode.
    /// </summary>
    private static bool ConnectOnReactor(Hub hub, Socket s, EndPoint remoteEP)
    {
        var backoff = new PollBackoff();
        while (true)
        {
            switch (StartConnect(s, remoteEP))
            {
                case ConnectStart.NotHandled: return false;
                case ConnectStart.Connected: return true;
                case ConnectStart.NoRoom:
                    // Nothing signals room in a Unix listener's backlog: retry as a blocking connect waits, killable.
                    Green.Sleep(backoff.Next(PollBackoff.Max));
                    backoff.Grow();
                    continue;
            }
            break;
        }
        try
        {
            while (true)
            {
                var readiness = SocketIo.WaitWritableOnce(hub, s, null);
                if (readiness is null or Readiness.Closed) throw new SocketException((int)SocketError.OperationAborted);
                switch (ConnectOutcome(s))
                {
                    case SocketError.Success: return true;
                    case { } error: throw new SocketException((int)error);
                }
            }
        }
        catch
        {
            ForgetPendingConnect(s); // failed, or killed or closed while waiting
            throw;
        }
    }

    /// <summary>How <see cref="StartConnect"/> left a non-blocking connect.</summary>
    internal enum ConnectStart
    {
        /// <summary>The socket cannot be switched to non-blocking mode: nothing was done.</summary>
        NotHandled,

        /// <summary>Connected at once (loopback often does).</summary>
        Connected,

        /// <summary>In progress: wait until the socket is writable, then ask <see cref="ConnectOutcome"/>.</summary>
        InProgress,

        /// <summary>A Unix listener's backlog is full: nothing started and nothing was recorded; try again later.</summary>
        NoRoom,
    }

    /// <summary>
    /// Starts the non-blocking connect. Throws the socket's own exception for a connect that fails at once.
    /// </summary>
    /// <remarks>For AF_UNIX, EAGAIN (WouldBlock) does not mean "in progress", as EINPROGRESS does for TCP: the listener's
    /// backlog is full and no connection was started, yet the socket is writable at once with no error, so waiting for
    /// writability would report a connection that does not exist. A blocking connect waits for room instead.</remarks>
    internal static ConnectStart StartConnect(Socket s, EndPoint remoteEP)
    {
        if (!CanForgetPendingConnect(s)) return ConnectStart.NotHandled;
        bool wasBlocking = s.Blocking;
        try
        {
            s.Blocking = false;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return ConnectStart.NotHandled; // the other path reports the socket's state
        }
        try
        {
            using (Parking.SuppressCooperation())
                s.Connect(remoteEP);
            return ConnectStart.Connected; // connected at once, or the socket's own exception
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock && s.AddressFamily == AddressFamily.Unix)
        {
            ForgetPendingConnect(s);
            return ConnectStart.NoRoom;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
            return ConnectStart.InProgress;
        }
        finally
        {
            s.Blocking = wasBlocking;
        }
    }

    /// <summary>
    /// The outcome of a non-blocking connect once the socket reported writability: Success (the socket records the
    /// connection: endpoints, state), the error it failed with, or null when it is still in progress (an early edge).
    /// A caller that ends the connect without success calls <see cref="ForgetPendingConnect"/>.
    /// </summary>
    internal static SocketError? ConnectOutcome(Socket s)
    {
        // SO_ERROR is how a non-blocking connect reports its outcome (.NET returns it as a SocketError).
        var error = (SocketError)(int)s.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
        if (error != SocketError.Success) return error; // the caller ends the connect: ForgetPendingConnect
        return s.Connected ? SocketError.Success : null; // the getter records the connection
    }

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_nonBlockingConnectInProgress")]
    private static extern ref bool PendingConnect(Socket s);

    /// <summary>
    /// Ends .NET's bookkeeping of a non-blocking connect that failed, was cancelled or was abandoned by a kill. Left in
    /// place, the Connected getter would poll the socket, see it writable (the failure, or a handshake the kernel
    /// finished after the cancellation) and report it connected, where .NET's own failed or cancelled connect leaves
    /// it unconnected.
    /// </summary>
    internal static void ForgetPendingConnect(Socket s)
    {
        if (s_pendingConnectField > 0) PendingConnect(s) = false;
    }

    private static int s_pendingConnectField; // 0 unknown, 1 present, -1 missing (then connects use ConnectAsync)

    private static bool CanForgetPendingConnect(Socket s)
    {
        if (s_pendingConnectField == 0)
        {
            try
            {
                _ = PendingConnect(s);
                s_pendingConnectField = 1;
            }
            catch (MissingFieldException)
            {
                s_pendingConnectField = -1;
            }
        }
        return s_pendingConnectField > 0;
    }
}
