using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

/// <summary>
/// One receive of the socket's own (<see cref="Socket.ReceiveFrom(byte[], ref System.Net.EndPoint)"/>,
/// <see cref="Socket.ReceiveMessageFrom(byte[], int, int, ref SocketFlags, ref System.Net.EndPoint, out System.Net.Sockets.IPPacketInformation)"/>,
/// <see cref="Socket.Receive(Span{byte}, SocketFlags, out SocketError)"/>...) that
/// <see cref="CooperativeSocket.ReceiveWhenReadable{TState}"/> makes, its arguments and results kept in <paramref name="state"/>.
/// </summary>
/// <param name="socket">The socket.</param>
/// <param name="state">The call's arguments and, once it returned, its results.</param>
/// <returns>The error the call reports through its <c>out SocketError</c> parameter, or <see cref="SocketError.Success"/> for a
/// call that throws its errors.</returns>
public delegate SocketError ReceiveAttempt<TState>(Socket socket, ref TState state)
    where TState : allows ref struct;

// Message sockets (UDP, Unix datagram, seqpacket). Where the reactor can make the receive itself it does, with
// MSG_DONTWAIT per call, so the socket's mode never changes under another user of it (a plain thread, a greenlet of another
// hub, blocked in its own receive on the same socket): Receive is a recv, ReceiveFrom a recvfrom (TryReceiveFrom), which
// the caller turns into an EndPoint as .NET does. What the reactor does not make (ReceiveMessageFrom, whose packet
// information and flags .NET builds from recvmsg's control data in ways that are internal to it; other flags; an empty
// buffer, which .NET answers with a peek) is the socket's own call, made with the socket non-blocking
// (ReceiveWhenReadable), because another reader may take the datagram between the wake and the call: a blocking call then
// waited in recvmsg holding the hub until the next datagram came, and for good when the sender was a greenlet of that hub.
// Made first, before any wait, it also throws the original's own exception for bad arguments or state (unbound, wrong
// address family) at once, where a wait first held them until data came.
//
// Rejected: MSG_DONTWAIT through SocketFlags (.NET refuses the bit with OperationNotSupported, and once the descriptor is
// non-blocking its blocking path waits on its own engine after EAGAIN anyway).
public static partial class CooperativeSocket
{
    // One gate per socket: two hubs' threads switching the same socket would otherwise restore each other's switch, leaving
    // one call blocking or the socket non-blocking for good. Every call made with the socket switched takes it (the
    // datagram receives here, the accept on the reactor).
    private static readonly ConditionalWeakTable<Socket, Lock> s_nonBlockingGates = new();

    private static Lock NonBlockingGate(Socket socket) => s_nonBlockingGates.GetValue(socket, static _ => new Lock());

    /// <summary>
    /// Receives one datagram and its sender's address, parking while none is there: a <c>recvfrom</c> with
    /// <c>MSG_DONTWAIT</c> on the hub's reactor, the socket's mode untouched, so that a plain thread (or a greenlet of
    /// another hub) in a blocking receive on the same socket keeps its blocking behaviour.
    /// </summary>
    /// <param name="socket">A message socket (UDP, Unix datagram, raw, seqpacket), blocking or not.</param>
    /// <param name="buffer">Where the datagram goes; a longer datagram is cut to its length, as
    /// <see cref="Socket.ReceiveFrom(Span{byte}, SocketFlags, SocketAddress)"/> cuts it.</param>
    /// <param name="flags"><see cref="SocketFlags.None"/>, or any of <see cref="SocketFlags.Peek"/>,
    /// <see cref="SocketFlags.OutOfBand"/>, <see cref="SocketFlags.DontRoute"/>.</param>
    /// <param name="receivedAddress">Receives the sender's address as the kernel reports it (its
    /// <see cref="SocketAddress.Size"/> is set when the receive succeeded); at least
    /// <see cref="SocketAddress.GetMaximumAddressSize"/> of the socket's family. Turn it into an endpoint with
    /// <see cref="System.Net.EndPoint.Create"/>.</param>
    /// <param name="timeout">How long to wait for a datagram (null or infinite: no limit).</param>
    /// <param name="received">The bytes received; 0 on an error, or when the socket's receive side is shut down (as a
    /// thread's receive returns then, with no address: <see cref="SocketAddress.Size"/> 0).</param>
    /// <param name="error"><see cref="SocketError.Success"/>, <see cref="SocketError.TimedOut"/>,
    /// <see cref="SocketError.Interrupted"/> when the socket was closed meanwhile, or the socket's error.</param>
    /// <returns>Whether the receive was made this way. False, having taken nothing, where it cannot be: no reactor (not
    /// Linux x64), other flags, an empty buffer, an address too small for the socket's family, a closed socket. Make the
    /// socket's own call through <see cref="ReceiveWhenReadable{TState}"/> then.</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static bool TryReceiveFrom(Socket socket, Span<byte> buffer, SocketFlags flags, SocketAddress receivedAddress, TimeSpan? timeout, out int received, out SocketError error)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(receivedAddress);
        var hub = RequireHub();
        (received, error) = (0, SocketError.Success);
        if (!IsMessageSocket(socket) || receivedAddress.Buffer.Length < SocketAddress.GetMaximumAddressSize(socket.AddressFamily)
            || !SocketIo.TryReceiveFrom(hub, socket, buffer, flags, receivedAddress.Buffer.Span, timeout, out received, out int length, out error))
            return false;
        if (error == SocketError.Success) receivedAddress.Size = length;
        return true;
    }

    /// <summary>
    /// Makes <paramref name="receive"/>, one receive call of the socket's own, without letting it block: at once, and again
    /// each time the socket becomes readable while the call found nothing, within <paramref name="timeout"/>. For message
    /// sockets (datagrams), whose receives must come from the socket itself to report the sender, truncation and packet
    /// information, and which other readers may share.
    /// </summary>
    /// <param name="socket">The socket; blocking or not (it is switched to non-blocking mode for each call, under a lock
    /// per socket, and <see cref="Socket.Blocking"/> restored).</param>
    /// <param name="timeout">How long to wait for data over the whole call (null or infinite: no limit).</param>
    /// <param name="state">The call's arguments and results.</param>
    /// <param name="receive">The call. It may run several times (each time nothing was there: it reports
    /// <see cref="SocketError.WouldBlock"/> or throws it), so it starts from the caller's arguments each time. Its other
    /// exceptions propagate: the socket's own, thrown before any I/O for bad arguments or a socket that cannot receive.</param>
    /// <returns>What the call that ran reported (<see cref="SocketError.Success"/> for a call that throws its errors);
    /// <see cref="SocketError.TimedOut"/>; <see cref="SocketError.Interrupted"/> when the socket was closed meanwhile; or
    /// an error the socket reported while waited on.</returns>
    /// <remarks>
    /// <para>A socket whose receive side is shut down (<see cref="Socket.Shutdown"/>) ends the wait: the call is then
    /// made on a blocking file descriptor, which the kernel no longer blocks, so it returns what a blocked thread's call
    /// returns then (0, or a datagram still queued).</para>
    /// <para>While a greenlet's call runs (one system call) the socket is non-blocking: a plain thread's receive that starts
    /// in that instant reports <see cref="SocketError.WouldBlock"/>. Under <c>Patch.All()</c> the patched receives of
    /// plain threads retry then.</para>
    /// </remarks>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static SocketError ReceiveWhenReadable<TState>(Socket socket, TimeSpan? timeout, ref TState state, ReceiveAttempt<TState> receive)
        where TState : allows ref struct
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(receive);
        var hub = RequireHub();
        long deadline = SocketIo.Deadline(hub, timeout);
        while (true)
        {
            if (TryReceiveNonBlocking(socket, ref state, receive) is { } done) return done;
            if (SocketIo.IsReceiveShutDown(socket)) return ReceiveShutDown(socket, ref state, receive);
            var left = SocketIo.Remaining(hub, deadline);
            switch (SocketIo.WaitReadableOnce(hub, socket, left))
            {
                case Readiness.Ready:
                    continue;
                case Readiness.TimedOut:
                    return SocketError.TimedOut;
                case Readiness.Closed:
                    return SocketIo.ClosedUnderCall(socket);
                case null:
                    // No reactor for this socket: the peek of the other path (the next attempt reports a closed socket).
                    var ready = WaitReadable(hub, socket, left);
                    if (ready != SocketError.Success) return ready;
                    continue;
            }
        }
    }

    /// <summary>The call, with the socket non-blocking: what it reported, or null when it would have blocked.</summary>
    private static SocketError? TryReceiveNonBlocking<TState>(Socket socket, ref TState state, ReceiveAttempt<TState> receive)
        where TState : allows ref struct
    {
        using (Parking.SuppressCooperation())
        {
            lock (NonBlockingGate(socket))
            {
                bool blocking = socket.Blocking;
                try
                {
                    if (blocking) socket.Blocking = false;
                }
                catch (ObjectDisposedException)
                {
                    return Attempt(socket, ref state, receive); // disposed: the call throws its own exception
                }
                try
                {
                    var error = Attempt(socket, ref state, receive);
                    return error == SocketError.WouldBlock ? null : error;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    return null;
                }
                finally
                {
                    if (blocking) RestoreBlocking(socket, true);
                }
            }
        }
    }

    /// <summary>
    /// The call on a socket whose receive side is shut down, where nothing is queued: the kernel returns 0 at once from a
    /// blocking receive and EAGAIN from a non-blocking one, so it is made on a blocking descriptor, bypassing .NET's
    /// emulation of blocking (which waits for an edge that never comes), to return exactly what a thread's returns.
    /// </summary>
    private static SocketError ReceiveShutDown<TState>(Socket socket, ref TState state, ReceiveAttempt<TState> receive)
        where TState : allows ref struct
    {
        using (Parking.SuppressCooperation())
        {
            lock (NonBlockingGate(socket))
            {
                bool blocking = socket.Blocking;
                try
                {
                    if (blocking) socket.Blocking = false; // .NET's direct system call, not its emulated wait
                }
                catch (ObjectDisposedException)
                {
                    return Attempt(socket, ref state, receive); // disposed: the call throws its own exception
                }
                try
                {
                    using (SocketIo.MakeDescriptorBlocking(socket))
                        return Attempt(socket, ref state, receive);
                }
                finally
                {
                    if (blocking) RestoreBlocking(socket, true);
                }
            }
        }
    }

    private static SocketError Attempt<TState>(Socket socket, ref TState state, ReceiveAttempt<TState> receive)
        where TState : allows ref struct => receive(socket, ref state);

    /// <summary>Whether receives on <paramref name="socket"/> take datagrams (or records) whole: those that
    /// <see cref="ReceiveWhenReadable{TState}"/> is for.</summary>
    private static bool IsMessageSocket(Socket socket) =>
        socket.SocketType is SocketType.Dgram or SocketType.Raw or SocketType.Rdm or SocketType.Seqpacket;
}
