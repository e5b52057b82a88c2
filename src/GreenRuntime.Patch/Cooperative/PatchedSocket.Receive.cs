using System.Net.Sockets;
using Layer = GreenRuntime.LowLevel.CooperativeSocket;

namespace GreenRuntime.Cooperative;

// Receives. On a datagram socket, the original through the core's ReceiveWhenReadable, as ReceiveFrom
// (PatchedSocket.Datagram.cs). Otherwise the core's cooperative Receive (the system call on the reactor, or wait
// readable and then the original). A receive the original would reject at once (bad arguments) runs the original, so its exception is
// exactly the BCL's. A receive into an empty buffer is no exception: on a blocking socket it waits until data is there
// (and then returns 0 without taking any), which is how synchronous SslStream waits for each TLS record; so it waits
// readable first, like any receive. Run as the original, it held the hub until the peer sent: a TLS server and its
// clients on one hub hung for good, and one idle TLS connection stopped every other greenlet.
internal static partial class PatchedSocket
{
    public static int Receive(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (IsMessageSocket(s))
        {
            var call = new DatagramCall { Array = buffer, Offset = offset, Size = size, Flags = socketFlags, ReportsErrors = true };
            errorCode = Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
            {
                c.Received = ReceiveArray.Call(s, c.Array!, c.Offset, c.Size, c.Flags, out var error);
                return error;
            });
            return call.Received;
        }
        if (!Cooperates(s) || !IsSlice(buffer, offset, size))
            return ReceiveArray.Call(s, buffer!, offset, size, socketFlags, out errorCode);
        if (size == 0)
            return WaitReadableThen(s, out errorCode) ? ReceiveArray.Call(s, buffer, offset, size, socketFlags, out errorCode) : 0;
        return Layer.Receive(s, buffer.AsSpan(offset, size), socketFlags, ReceiveTimeout(s), out errorCode);
    }

    public static int Receive(Socket s, Span<byte> buffer, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (IsMessageSocket(s))
        {
            var call = new DatagramCall { Buffer = buffer, Flags = socketFlags, ReportsErrors = true };
            errorCode = Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
            {
                c.Received = ReceiveSpan.Call(s, c.Buffer, c.Flags, out var error);
                return error;
            });
            return call.Received;
        }
        if (!Cooperates(s))
            return ReceiveSpan.Call(s, buffer, socketFlags, out errorCode);
        if (buffer.IsEmpty)
            return WaitReadableThen(s, out errorCode) ? ReceiveSpan.Call(s, buffer, socketFlags, out errorCode) : 0;
        return Layer.Receive(s, buffer, socketFlags, ReceiveTimeout(s), out errorCode);
    }

    public static int Receive(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (IsMessageSocket(s))
        {
            var call = new DatagramCall { List = buffers, Flags = socketFlags, ReportsErrors = true };
            errorCode = Receive(s, ref call, static (Socket s, ref DatagramCall c) =>
            {
                c.Received = ReceiveList.Call(s, c.List!, c.Flags, out var error);
                return error;
            });
            return call.Received;
        }
        if (!Cooperates(s) || buffers is null || buffers.Count == 0)
            return ReceiveList.Call(s, buffers!, socketFlags, out errorCode);
        return WaitReadableThen(s, out errorCode) ? ReceiveList.Call(s, buffers, socketFlags, out errorCode) : 0;
    }

    /// <summary>Whether receives on <paramref name="s"/> take whole datagrams (or records), which other readers may share:
    /// those go through <see cref="Receive(Socket, ref DatagramCall, GreenRuntime.LowLevel.ReceiveAttempt{DatagramCall})"/>.</summary>
    private static bool IsMessageSocket(Socket s) =>
        s.SocketType is SocketType.Dgram or SocketType.Raw or SocketType.Rdm or SocketType.Seqpacket;

    /// <summary>Parks until a receive on <paramref name="s"/> would not block (within its ReceiveTimeout); false with the
    /// error to report (a timeout, or an error the socket reported meanwhile) when the original must not run.</summary>
    private static bool WaitReadableThen(Socket s, out SocketError errorCode)
    {
        errorCode = Layer.WaitReadable(s, ReceiveTimeout(s));
        return errorCode == SocketError.Success;
    }
}
