using System.Net;
using System.Net.Sockets;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

// The async socket calls of stackless greenlets, on the hub's reactor: the same non-blocking attempt as the parked
// calls (SocketIo.Attempt), and on EAGAIN a stackless wait on the reactor (Io/AsyncSocketOperation.cs) instead of a
// park. Each Try* method decides whether the call is its business; when it is not, it returns false having done
// nothing, and the caller runs .NET's own asynchronous call.
public static partial class CooperativeSocket
{
    /// <summary>
    /// Receives like <see cref="Socket.ReceiveAsync(Memory{byte}, SocketFlags, CancellationToken)"/>, completed through the
    /// calling hub's epoll reactor when the caller is a stackless greenlet of a hub that has one: the non-blocking system
    /// call at once, and while nothing is there a wait on the reactor, resumed on the hub's own thread (no .NET socket
    /// engine, no thread pool).
    /// </summary>
    /// <param name="socket">A connected stream socket.</param>
    /// <param name="buffer">Where the data goes. Empty: the task completes with 0 once data (or the end of the stream, or an
    /// error) is there, consuming nothing, as .NET's zero-byte receive does.</param>
    /// <param name="flags">None, Peek, OutOfBand or DontRoute; any other flag is not handled here.</param>
    /// <param name="cancellationToken">Cancels the wait: the task then faults with <see cref="OperationCanceledException"/>.</param>
    /// <param name="exceptionFor">The exception a failed receive faults the task with (default: <c>new SocketException((int)error)</c>,
    /// as <see cref="Socket.ReceiveAsync(Memory{byte}, SocketFlags, CancellationToken)"/>).</param>
    /// <param name="result">The receive's task when the method returns true: the bytes received, 0 at the end of the stream.</param>
    /// <returns>False, having done nothing, when the call is not for the reactor: off a stackless greenlet (off a hub, on a
    /// stackful greenlet, in a hub callback, inside <see cref="Parking.SuppressCooperation"/>), no reactor on this platform,
    /// not a stream socket, a closed handle, other flags, a token already cancelled, or a readiness wait of something else on
    /// the same socket in progress. Use the socket's own call then.</returns>
    /// <remarks>Concurrent receives on one socket are served one after another, in the order they were made, as .NET's own
    /// engine queues them: a receive made while another waits for data waits for its turn, so each gets the bytes that
    /// follow those of the one before it. A kill or an expired <see cref="GreenTimeout"/> of the awaiting greenlet faults
    /// the task with that exception at once (when the receive has to wait, or waits for its turn); no data is lost
    /// (nothing is read after the task ended).</remarks>
    public static bool TryReceiveAsync(Socket socket, Memory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out ValueTask<int> result)
    {
        result = default;
        if (!SocketIo.PassesThrough(flags, send: false)
            || !TryTakeTurn(socket, write: false, cancellationToken, out var turn, out var turnTask))
            return false;
        if (turnTask != null)
        {
            result = new ValueTask<int>(ReceiveInTurn(turnTask, turn, socket, buffer, flags, cancellationToken, exceptionFor));
            return true;
        }
        return ReceiveHoldingTurn(turn, socket, buffer, flags, cancellationToken, exceptionFor, out result);
    }

    /// <summary>A receive by the holder of the socket's receive turn: the non-blocking call at once, and while nothing is
    /// there an operation on the reactor that keeps the turn until it ends. False: not for the reactor after all (the
    /// turn is given back; the caller receives another way).</summary>
    private static bool ReceiveHoldingTurn(TurnHeld turn, Socket socket, Memory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out ValueTask<int> result)
    {
        result = default;
        var (hub, reactor, handle, fd, _) = turn;
        if (cancellationToken.IsCancellationRequested || !reactor.CanWaitAsync(handle, fd, write: false))
        {
            turn.Release();
            return false;
        }
        Span<byte> probe = stackalloc byte[1];
        bool peek = buffer.IsEmpty;
        switch (SocketIo.Attempt(socket, handle, fd, send: false, peek ? probe : buffer.Span, peek ? flags | SocketFlags.Peek : flags, out int n, out var error))
        {
            case SocketIo.Outcome.NotHandled:
                turn.Release();
                return false;
            case SocketIo.Outcome.Done:
                turn.Release();
                result = error == SocketError.Success ? new ValueTask<int>(peek ? 0 : n) : ValueTask.FromException<int>(ExceptionFor(exceptionFor, error));
                return true;
        }
        result = new AsyncSocketOperation(hub, reactor, socket, handle, fd, AsyncSocketKind.Receive, buffer, flags, 0, cancellationToken, exceptionFor)
        {
            HoldsTurn = true,
        }.Start();
        return true;
    }

    /// <summary>A receive made while another receive of the socket was under way: it waits for its turn, then receives.</summary>
    private static async Task<int> ReceiveInTurn(Task queued, TurnHeld turn, Socket socket, Memory<byte> buffer, SocketFlags flags,
        CancellationToken cancellationToken, Func<SocketError, Exception>? exceptionFor)
    {
        await WaitForTurn(queued);
        if (ReceiveHoldingTurn(turn, socket, buffer, flags, cancellationToken, exceptionFor, out var result)) return await result;
        // Closed while it waited: as .NET fails the receives it queued. Otherwise the token was cancelled just now, or
        // something else waits for the socket to become readable (a readiness wait): the original's call, as it would
        // have been without the queue.
        if (turn.Handle.IsClosed) throw ExceptionFor(exceptionFor, SocketError.OperationAborted);
        return await socket.ReceiveAsync(buffer, flags, cancellationToken);
    }

    /// <summary>Waits for a queued call's turn, which is handed over in the call's own greenlet (Reactor.Turn.Hand), so what
    /// the call does next is that greenlet's; cancelled, killed or timed out meanwhile, it throws here and the turn passes
    /// to the next call in line.</summary>
    private static async Task WaitForTurn(Task queued)
    {
        await queued.ConfigureAwait(false);
        if (Parking.ParkingHubSilent() is null)
            throw new InvalidOperationException("Internal error: a queued socket call was given its turn off its hub.");
    }

    /// <summary>
    /// Sends like <see cref="Socket.SendAsync(ReadOnlyMemory{byte}, SocketFlags, CancellationToken)"/> (all of
    /// <paramref name="buffer"/>), through the calling hub's reactor; see
    /// <see cref="TryReceiveAsync(Socket, Memory{byte}, SocketFlags, CancellationToken, Func{SocketError, Exception}?, out ValueTask{int})"/>
    /// for when it applies.
    /// </summary>
    /// <param name="socket">A connected stream socket.</param>
    /// <param name="buffer">What to send; read until the task completes.</param>
    /// <param name="flags">None, OutOfBand or DontRoute; any other flag is not handled here.</param>
    /// <param name="cancellationToken">Cancels the wait for buffer space (what went out stays sent).</param>
    /// <param name="exceptionFor">The exception a failed send faults the task with (default: a <see cref="SocketException"/>).</param>
    /// <param name="result">The send's task: the number of bytes sent (all of them).</param>
    /// <returns>False, having done nothing, when the call is not for the reactor.</returns>
    /// <remarks>Concurrent sends on one socket go out one after another, in the order they were made, as .NET's own engine
    /// queues them: a send made while another waits for buffer space waits for its turn.</remarks>
    public static bool TrySendAsync(Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out ValueTask<int> result)
    {
        result = default;
        if (!TryStartSend(socket, buffer, flags, cancellationToken, exceptionFor, out var queued, out var operation, out var failure, out int sent))
            return false;
        result = queued != null ? new ValueTask<int>(queued)
            : operation?.Start() ?? (failure is null ? new ValueTask<int>(sent) : ValueTask.FromException<int>(failure));
        return true;
    }

    /// <summary>
    /// <see cref="TrySendAsync(Socket, ReadOnlyMemory{byte}, SocketFlags, CancellationToken, Func{SocketError, Exception}?, out ValueTask{int})"/>
    /// for callers that need no byte count (a stream's <c>WriteAsync</c>).
    /// </summary>
    /// <param name="socket">A connected stream socket.</param>
    /// <param name="buffer">What to send; read until the task completes.</param>
    /// <param name="flags">None, OutOfBand or DontRoute; any other flag is not handled here.</param>
    /// <param name="cancellationToken">Cancels the wait for buffer space (what went out stays sent).</param>
    /// <param name="exceptionFor">The exception a failed send faults the task with (default: a <see cref="SocketException"/>).</param>
    /// <param name="result">The send's task.</param>
    /// <returns>False, having done nothing, when the call is not for the reactor.</returns>
    public static bool TrySendAsync(Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out ValueTask result)
    {
        result = default;
        if (!TryStartSend(socket, buffer, flags, cancellationToken, exceptionFor, out var queued, out var operation, out var failure, out _))
            return false;
        result = queued != null ? new ValueTask(queued)
            : operation?.StartUntyped() ?? (failure is null ? default : ValueTask.FromException(failure));
        return true;
    }

    /// <summary>The start both <c>TrySendAsync</c> forms share. False: not for the reactor (nothing was done). Otherwise one of:
    /// <paramref name="queued"/>, a send waiting for its turn behind another; <paramref name="operation"/>, waiting for buffer
    /// space (it holds the turn until it ends); <paramref name="failure"/>; or all of the buffer went out at once.</summary>
    private static bool TryStartSend(Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out Task<int>? queued, out AsyncSocketOperation? operation, out Exception? failure, out int sent)
    {
        queued = null;
        operation = null;
        failure = null;
        sent = 0;
        if (!SocketIo.PassesThrough(flags, send: true) || !TryTakeTurn(socket, write: true, cancellationToken, out var turn, out var turnTask))
            return false;
        if (turnTask != null)
        {
            queued = SendInTurn(turnTask, turn, socket, buffer, flags, cancellationToken, exceptionFor);
            return true;
        }
        return SendHoldingTurn(turn, socket, buffer, flags, cancellationToken, exceptionFor, out operation, out failure, out sent);
    }

    /// <summary><see cref="StartSend"/> by the holder of the socket's send turn, which passes the turn on unless an operation
    /// now waits with it. False: not for the reactor after all (the caller sends another way).</summary>
    private static bool SendHoldingTurn(TurnHeld turn, Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out AsyncSocketOperation? operation, out Exception? failure, out int sent)
    {
        bool handled = StartSend(turn, socket, buffer, flags, cancellationToken, exceptionFor, out operation, out failure, out sent);
        if (operation == null) turn.Release();
        return handled;
    }

    /// <summary>The socket's turn for one direction, held by the caller (<see cref="Reactor.TryTakeTurn"/>).</summary>
    private readonly record struct TurnHeld(Hub Hub, Reactor Reactor, SafeSocketHandle Handle, int Fd, bool Write)
    {
        public void Release() => Reactor.ReleaseTurn(Handle, Fd, Write);
    }

    /// <summary>An async call's first step: false when the call is not for the reactor; otherwise the caller holds the
    /// socket's turn for the direction (<paramref name="queued"/> null) or must await <paramref name="queued"/> for it.</summary>
    private static bool TryTakeTurn(Socket socket, bool write, CancellationToken cancellationToken, out TurnHeld turn, out Task? queued)
    {
        ArgumentNullException.ThrowIfNull(socket);
        turn = default;
        queued = null;
        if (cancellationToken.IsCancellationRequested
            || !OnStacklessReactor(socket, write, out var hub, out var reactor, out var handle, out int fd, waitFree: false))
            return false;
        turn = new TurnHeld(hub, reactor, handle, fd, write);
        return reactor.TryTakeTurn(handle, fd, write, hub.CurrentGreenlet, cancellationToken, out queued);
    }

    /// <summary>A send made while another send of the socket was under way: it waits for its turn, then sends.</summary>
    private static async Task<int> SendInTurn(Task queued, TurnHeld turn, Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags,
        CancellationToken cancellationToken, Func<SocketError, Exception>? exceptionFor)
    {
        await WaitForTurn(queued);
        if (!SendHoldingTurn(turn, socket, buffer, flags, cancellationToken, exceptionFor, out var operation, out var failure, out int sent))
        {
            // Closed while it waited: as .NET fails the sends it queued. Otherwise something else waits for the socket to
            // become writable (a readiness wait): the send is .NET's own, as it would have been without the queue.
            if (turn.Handle.IsClosed) throw ExceptionFor(exceptionFor, SocketError.OperationAborted);
            return await socket.SendAsync(buffer, flags, cancellationToken);
        }
        if (operation != null) return await operation.Start();
        return failure is null ? sent : throw failure;
    }

    /// <summary>
    /// Connects like <see cref="Socket.ConnectAsync(EndPoint, CancellationToken)"/>, waiting on the calling hub's reactor
    /// (the non-blocking connect of the parked <see cref="Connect"/>); see
    /// <see cref="TryReceiveAsync(Socket, Memory{byte}, SocketFlags, CancellationToken, Func{SocketError, Exception}?, out ValueTask{int})"/>
    /// for when it applies. A <see cref="DnsEndPoint"/>, a connected or non-stream socket is not handled here.
    /// </summary>
    /// <param name="socket">A stream socket, not yet connected.</param>
    /// <param name="remoteEndPoint">An IP (or other non-DNS) endpoint.</param>
    /// <param name="cancellationToken">Cancels the connect (<see cref="OperationCanceledException"/>); the socket is then
    /// unusable, as after a failed connect.</param>
    /// <param name="result">The connect's task: faults with the socket's <see cref="SocketException"/> when the connection fails.</param>
    /// <returns>False, having done nothing, when the call is not for the reactor.</returns>
    public static bool TryConnectAsync(Socket socket, EndPoint remoteEndPoint, CancellationToken cancellationToken, out ValueTask result)
    {
        ArgumentNullException.ThrowIfNull(socket);
        result = default;
        if (remoteEndPoint is null or DnsEndPoint || cancellationToken.IsCancellationRequested || socket.Connected
            || !OnStacklessReactor(socket, write: true, out var hub, out var reactor, out var handle, out int fd))
            return false;
        ConnectStart connected;
        try
        {
            connected = StartConnect(socket, remoteEndPoint);
        }
        catch (SocketException e)
        {
            result = ValueTask.FromException(e); // failed at once (refused on loopback, say): as the original reports it
            return true;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or ObjectDisposedException)
        {
            return false; // nothing was done: the original validates and throws its own exception
        }
        switch (connected)
        {
            case ConnectStart.NotHandled: return false;
            case ConnectStart.Connected: return true;
            case ConnectStart.NoRoom: return false; // a Unix listener's full backlog: nothing started, the original reports it
        }
        result = new AsyncSocketOperation(hub, reactor, socket, handle, fd, AsyncSocketKind.Connect, default, SocketFlags.None, 0, cancellationToken, null).StartUntyped();
        return true;
    }

    /// <summary>The send's synchronous part: everything that goes out at once. False: not handled. Otherwise the operation that
    /// waits for the rest (null when nothing is left), or the failure, or the bytes sent.</summary>
    /// <remarks>The caller holds the send turn, so the checks of <see cref="TryTakeTurn"/> were made; what may have
    /// changed since is whether something else waits for the socket to become writable.</remarks>
    private static bool StartSend(TurnHeld turn, Socket socket, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancellationToken,
        Func<SocketError, Exception>? exceptionFor, out AsyncSocketOperation? operation, out Exception? failure, out int sent)
    {
        operation = null;
        failure = null;
        sent = 0;
        var (hub, reactor, handle, fd, _) = turn;
        if (cancellationToken.IsCancellationRequested || !reactor.CanWaitAsync(handle, fd, write: true))
            return false;
        // The memory stays the caller's: the operation only reads it (MemoryMarshal.AsMemory gives recv/send one type).
        var writable = System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer);
        while (true)
        {
            switch (SocketIo.Attempt(socket, handle, fd, send: true, writable.Span[sent..], flags, out int n, out var error))
            {
                case SocketIo.Outcome.NotHandled when sent == 0:
                    return false;
                case SocketIo.Outcome.NotHandled:
                    failure = ExceptionFor(exceptionFor, SocketError.OperationAborted);
                    return true;
                case SocketIo.Outcome.WouldBlock:
                    operation = new AsyncSocketOperation(hub, reactor, socket, handle, fd, AsyncSocketKind.Send, writable, flags, sent, cancellationToken, exceptionFor)
                    {
                        HoldsTurn = true, // the caller's (SendHoldingTurn)
                    };
                    return true;
            }
            if (error != SocketError.Success)
            {
                failure = ExceptionFor(exceptionFor, error);
                return true;
            }
            sent += n;
            if (sent >= writable.Length) return true;
        }
    }

    /// <summary>Whether an async call on <paramref name="socket"/> is for the reactor: made by a stackless greenlet of a hub
    /// with a reactor, on a stream socket with an open handle that the reactor can wait for in this direction (unless
    /// <c>waitFree</c> is false: a send that orders itself behind the others takes its turn instead).</summary>
    private static bool OnStacklessReactor(Socket socket, bool write, out Hub hub, out Reactor reactor, out SafeSocketHandle handle, out int fd,
        bool waitFree = true)
    {
        reactor = null!;
        handle = null!;
        fd = -1;
        hub = Parking.ParkingHubSilent()!;
        if (hub is null) return false;
        var current = hub.CurrentGreenlet;
        return current.IsStackless && current != hub.HubGreenlet && socket.SocketType == SocketType.Stream
            && SocketIo.IsAvailable(hub) && SocketIo.TryGetHandle(hub, socket, out reactor, out handle, out fd)
            && (!waitFree || reactor.CanWaitAsync(handle, fd, write));
    }

    private static Exception ExceptionFor(Func<SocketError, Exception>? exceptionFor, SocketError error) =>
        exceptionFor?.Invoke(error) ?? new SocketException((int)error);
}
