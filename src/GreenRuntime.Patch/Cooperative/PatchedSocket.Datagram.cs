using System.Net;
using System.Net.Sockets;
using GreenRuntime.LowLevel;
using Layer = GreenRuntime.LowLevel.CooperativeSocket;

namespace GreenRuntime.Cooperative;

// Datagram (and message) calls. ReceiveFrom is the core's CooperativeSocket.TryReceiveFrom where it takes the call (a
// recvfrom with MSG_DONTWAIT on the reactor: the socket's mode never changes, so a thread or another hub's greenlet
// blocked in a receive on the same socket never sees WouldBlock because of it), the sender turned into an EndPoint as the
// BCL does (SenderEndPoint). Arguments or state the original rejects go to the original, for its own exception. The rest
// (ReceiveMessageFrom, whose packet information only the BCL builds, and what the reactor declines) is the original made
// through the core's CooperativeSocket.ReceiveWhenReadable: at once and again whenever the socket becomes readable, never
// blocking (another reader may take the datagram first), so it returns the datagram, its sender, its truncation flags
// and packet information exactly as the BCL reports them, and its own exceptions for bad arguments or state before any
// wait. Receive on a datagram socket (PatchedSocket.Receive.cs) goes the same way. SendTo parks on SendToAsync with a
// pooled copy of a span (a kill may abandon a copy, never the caller's memory), SendTimeout covering the whole call.
internal static partial class PatchedSocket
{
    public static int ReceiveFrom(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        if (IsSlice(buffer, offset, size) && TryReceiveFromOnReactor(s, buffer.AsSpan(offset, size), socketFlags, ref remoteEP, out int got))
            return got;
        var call = new DatagramCall { Array = buffer, Offset = offset, Size = size, Flags = socketFlags, Remote = remoteEP };
        Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
        {
            c.Received = ReceiveFromArray.Call(s, c.Array!, c.Offset, c.Size, c.Flags, ref c.Remote!);
            return SocketError.Success;
        });
        remoteEP = call.Remote!;
        return call.Received;
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        if (TryReceiveFromOnReactor(s, buffer, socketFlags, ref remoteEP, out int got)) return got;
        var call = new DatagramCall { Buffer = buffer, Flags = socketFlags, Remote = remoteEP };
        Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
        {
            c.Received = ReceiveFromSpan.Call(s, c.Buffer, c.Flags, ref c.Remote!);
            return SocketError.Success;
        });
        remoteEP = call.Remote!;
        return call.Received;
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, SocketAddress receivedAddress)
    {
        // The original's own checks first: a smaller address is its ArgumentOutOfRangeException.
        if (Cooperates(s) && receivedAddress is not null && receivedAddress.Size >= SocketAddress.GetMaximumAddressSize(s.AddressFamily)
            && Layer.TryReceiveFrom(s, buffer, socketFlags, receivedAddress, ReceiveTimeout(s), out int got, out var error))
        {
            if (error != SocketError.Success) throw new SocketException((int)error);
            return got;
        }
        var call = new DatagramCall { Buffer = buffer, Flags = socketFlags, Address = receivedAddress };
        Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
        {
            c.Received = ReceiveFromAddress.Call(s, c.Buffer, c.Flags, c.Address!);
            return SocketError.Success;
        });
        return call.Received;
    }

    /// <summary>
    /// ReceiveFrom with an EndPoint through the core's recvfrom on the reactor. False, having taken nothing, where the
    /// original must run: off a greenlet, a non-blocking socket, arguments or state it rejects (a null or foreign-family
    /// endpoint, an unbound socket: its exception comes before any I/O), or what the core declines.
    /// </summary>
    private static bool TryReceiveFromOnReactor(Socket s, Span<byte> buffer, SocketFlags flags, ref EndPoint remoteEP, out int received)
    {
        received = 0;
        if (!Cooperates(s) || remoteEP is null || !s.IsBound || !CanTryAddressFamily(s, remoteEP.AddressFamily)) return false;
        var address = new SocketAddress(s.AddressFamily);
        if (!Layer.TryReceiveFrom(s, buffer, flags, address, ReceiveTimeout(s), out received, out var error)) return false;
        if (error != SocketError.Success) throw new SocketException((int)error);
        remoteEP = SenderEndPoint(s, remoteEP, address);
        return true;
    }

    /// <summary>Whether the original accepts an endpoint of <paramref name="family"/> on <paramref name="s"/> (its own
    /// family, or IPv4 on a dual-mode IPv6 socket).</summary>
    private static bool CanTryAddressFamily(Socket s, AddressFamily family) =>
        family == s.AddressFamily || (family == AddressFamily.InterNetwork && IsDualMode(s));

    private static bool IsDualMode(Socket s) => s.AddressFamily == AddressFamily.InterNetworkV6 && s.DualMode;

    private static readonly IPEndPoint s_anyV6 = new(IPAddress.IPv6Any, 0);
    private static readonly IPEndPoint s_anyV4 = new(IPAddress.Any, 0);

    /// <summary>
    /// The endpoint the original's ReceiveFrom reports for the sender in <paramref name="address"/>: the caller's
    /// <paramref name="remoteEP"/> creates it (an IPv4 one on a dual-mode socket an IPv6 one, so an IPv4 sender comes back
    /// as its IPv4-mapped IPv6 address, as the kernel reports it); an address of no size (a shut-down receive, an unnamed
    /// Unix sender) leaves <paramref name="remoteEP"/> as it was, and one the endpoint cannot create too.
    /// </summary>
    private static EndPoint SenderEndPoint(Socket s, EndPoint remoteEP, SocketAddress address)
    {
        if (address.Size == 0 && remoteEP.AddressFamily == address.Family) return remoteEP;
        var template = remoteEP.AddressFamily == AddressFamily.InterNetwork && IsDualMode(s) ? s_anyV6 : remoteEP;
        try
        {
            if (template.AddressFamily == address.Family) return template.Create(address);
            if (template.AddressFamily == AddressFamily.InterNetworkV6 && address.Family == AddressFamily.InterNetwork)
            {
                var v4 = (IPEndPoint)s_anyV4.Create(address);
                return new IPEndPoint(v4.Address.MapToIPv6(), v4.Port);
            }
        }
        catch (Exception e) when (e is ArgumentException or SocketException or FormatException)
        {
            // the original keeps the caller's endpoint when it cannot create one
        }
        return remoteEP;
    }

    public static int ReceiveMessageFrom(Socket s, byte[] buffer, int offset, int size, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var call = new DatagramCall { Array = buffer, Offset = offset, Size = size, Flags = socketFlags, Remote = remoteEP };
        Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
        {
            c.Flags = c.InFlags; // the original overwrites them, also when it would block
            c.Received = ReceiveMessageFromArray.Call(s, c.Array!, c.Offset, c.Size, ref c.Flags, ref c.Remote!, out c.Info);
            return SocketError.Success;
        });
        (socketFlags, remoteEP, ipPacketInformation) = (call.Flags, call.Remote!, call.Info);
        return call.Received;
    }

    public static int ReceiveMessageFrom(Socket s, Span<byte> buffer, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var call = new DatagramCall { Buffer = buffer, Flags = socketFlags, Remote = remoteEP };
        Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
        {
            c.Flags = c.InFlags;
            c.Received = ReceiveMessageFromSpan.Call(s, c.Buffer, ref c.Flags, ref c.Remote!, out c.Info);
            return SocketError.Success;
        });
        (socketFlags, remoteEP, ipPacketInformation) = (call.Flags, call.Remote!, call.Info);
        return call.Received;
    }

    /// <summary>The arguments and results of one datagram receive (each overload uses its own fields).</summary>
    private ref struct DatagramCall
    {
        public byte[]? Array;
        public int Offset, Size;
        public Span<byte> Buffer;
        public IList<ArraySegment<byte>>? List;
        public SocketFlags Flags;
        public SocketFlags InFlags;
        public EndPoint? Remote;
        public SocketAddress? Address;
        public IPPacketInformation Info;
        public int Received;
        public bool ReportsErrors; // an out SocketError overload: errors are returned, not thrown
    }

    /// <summary>
    /// A datagram receive: on a greenlet, the core's <see cref="Layer.ReceiveWhenReadable"/> (the original, never blocking,
    /// made at once, so its own exceptions for bad arguments or state come before any wait); elsewhere the original,
    /// called again when a greenlet's call made the socket non-blocking under it. The error of a call that reports its
    /// errors (the caller's <c>out SocketError</c>); a call that throws them gets its exception.
    /// </summary>
    private static SocketError Receive(Socket s, ref DatagramCall call, ReceiveAttempt<DatagramCall> receive)
    {
        call.InFlags = call.Flags;
        if (!Cooperates(s)) return OffHub(s, ref call, receive);
        var error = Layer.ReceiveWhenReadable(s, ReceiveTimeout(s), ref call, receive);
        if (error != SocketError.Success && !call.ReportsErrors) throw new SocketException((int)error);
        return error;
    }

    /// <summary>
    /// The original off the hub. A blocking socket's receive never reports WouldBlock by itself: it does when it started
    /// in the instant a greenlet's call had the socket non-blocking (one system call), and the thread then waits as the
    /// original would have, by calling it again once the socket is blocking again.
    /// </summary>
    private static SocketError OffHub(Socket s, ref DatagramCall call, ReceiveAttempt<DatagramCall> receive)
    {
        while (true)
        {
            bool blocking = s.Blocking;
            call.Flags = call.InFlags;
            try
            {
                var error = receive(s, ref call);
                if (error != SocketError.WouldBlock || !blocking || !BlockingAgain(s)) return error;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock && blocking)
            {
                if (!BlockingAgain(s)) throw;
            }
        }
    }

    /// <summary>Waits (a few microseconds: one system call of a greenlet) until <paramref name="s"/> is blocking again;
    /// false when it stays non-blocking (the application switched it).</summary>
    private static bool BlockingAgain(Socket s)
    {
        var spin = new SpinWait();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (!s.Blocking)
        {
            if (watch.ElapsedMilliseconds > 100) return false;
            spin.SpinOnce();
        }
        return true;
    }

    public static int SendTo(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || remoteEP is null || !IsSlice(buffer, offset, size))
            return SendToArray.Call(s, buffer!, offset, size, socketFlags, remoteEP!);
        return SendToParked(hub, s, buffer.AsMemory(offset, size), socketFlags, remoteEP, null)
            ?? SendToArray.Call(s, buffer, offset, size, socketFlags, remoteEP);
    }

    public static int SendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || remoteEP is null)
            return SendToSpan.Call(s, buffer, socketFlags, remoteEP!);
        return SendToCopy(hub, s, buffer, socketFlags, remoteEP, null) ?? SendToSpan.Call(s, buffer, socketFlags, remoteEP);
    }

    public static int SendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, SocketAddress socketAddress)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || socketAddress is null)
            return SendToAddress.Call(s, buffer, socketFlags, socketAddress!);
        return SendToCopy(hub, s, buffer, socketFlags, null, socketAddress) ?? SendToAddress.Call(s, buffer, socketFlags, socketAddress);
    }

    /// <summary><see cref="SendToParked"/> of a pooled copy: a span cannot outlive this frame, the copy is drained before it goes back.</summary>
    private static int? SendToCopy(Hub hub, Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, EndPoint? remote, SocketAddress? address)
    {
        var copy = IoBuffers.Pool.Rent(Math.Max(1, buffer.Length));
        buffer.CopyTo(copy);
        try
        {
            return SendToParked(hub, s, copy.AsMemory(0, buffer.Length), flags, remote, address);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    /// <summary>
    /// SendToAsync parked, with SendTimeout. Null when the async path refused the arguments before starting
    /// (the caller then runs the original, which throws its own exception).
    /// </summary>
    private static int? SendToParked(Hub hub, Socket s, ReadOnlyMemory<byte> data, SocketFlags flags, EndPoint? remote, SocketAddress? address)
    {
        using var cancel = new CancellationTokenSource();
        Task<int> send;
        try
        {
            send = (remote is not null ? s.SendToAsync(data, flags, remote, cancel.Token) : s.SendToAsync(data, flags, address!, cancel.Token)).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or ArgumentException or SocketException)
        {
            return null;
        }
        if (send.IsFaulted && send.Exception!.InnerException is not SocketException) return null; // a validation failure: the original's exception
        if (!Cooperative.Park(hub, send, SendTimeout(s), WaitReason.Socket, cancel, drain: true))
        {
            Parking.CancelQuietly(cancel);
            Parking.WaitBlocking(send);
            if (!send.IsCompletedSuccessfully) throw new SocketException((int)SocketError.TimedOut);
        }
        return send.GetAwaiter().GetResult(); // a SocketException as the original throws it
    }
}
