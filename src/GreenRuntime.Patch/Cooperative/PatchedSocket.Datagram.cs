using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

// Datagram (and message) calls. ReceiveFrom and ReceiveMessageFrom wait until the socket is readable through the
// core's cooperative layer, then call the original, which returns at once with the datagram, its sender and its
// truncation flags exactly as the BCL reports them (a bare recvfrom would not). SendTo parks on SendToAsync with a
// pooled copy of a span (a kill may abandon a copy, never the caller's memory), SendTimeout covering the whole call.
internal static partial class PatchedSocket
{
    public static int ReceiveFrom(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && buffer is not null && remoteEP is not null)
            ThrowUnlessReadable(s);
        return ReceiveFromArray.Call(s, buffer!, offset, size, socketFlags, ref remoteEP!);
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && remoteEP is not null)
            ThrowUnlessReadable(s);
        return ReceiveFromSpan.Call(s, buffer, socketFlags, ref remoteEP!);
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, SocketAddress receivedAddress)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && receivedAddress is not null)
            ThrowUnlessReadable(s);
        return ReceiveFromAddress.Call(s, buffer, socketFlags, receivedAddress!);
    }

    public static int ReceiveMessageFrom(Socket s, byte[] buffer, int offset, int size, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && buffer is not null && remoteEP is not null)
            ThrowUnlessReadable(s);
        return ReceiveMessageFromArray.Call(s, buffer!, offset, size, ref socketFlags, ref remoteEP!, out ipPacketInformation);
    }

    public static int ReceiveMessageFrom(Socket s, Span<byte> buffer, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && remoteEP is not null)
            ThrowUnlessReadable(s);
        return ReceiveMessageFromSpan.Call(s, buffer, ref socketFlags, ref remoteEP!, out ipPacketInformation);
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
