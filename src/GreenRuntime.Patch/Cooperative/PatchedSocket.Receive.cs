using System.Net.Sockets;
using Layer = GreenRuntime.LowLevel.CooperativeSocket;

namespace GreenRuntime.Cooperative;

// Stream receives: the core's cooperative Receive (the system call on the reactor, or wait readable and then the
// original). A receive the original would reject at once (bad arguments, an empty buffer) runs the original, so
// its exception or result is exactly the BCL's.
internal static partial class PatchedSocket
{
    public static int Receive(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || !IsSlice(buffer, offset, size) || size == 0)
            return ReceiveArray.Call(s, buffer!, offset, size, socketFlags, out errorCode);
        return Layer.Receive(s, buffer.AsSpan(offset, size), socketFlags, ReceiveTimeout(s), out errorCode);
    }

    public static int Receive(Socket s, Span<byte> buffer, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || buffer.IsEmpty)
            return ReceiveSpan.Call(s, buffer, socketFlags, out errorCode);
        return Layer.Receive(s, buffer, socketFlags, ReceiveTimeout(s), out errorCode);
    }

    public static int Receive(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || buffers is null || buffers.Count == 0)
            return ReceiveList.Call(s, buffers!, socketFlags, out errorCode);
        var ready = Layer.WaitReadable(s, ReceiveTimeout(s));
        if (ready != SocketError.Success)
        {
            errorCode = ready;
            return 0;
        }
        return ReceiveList.Call(s, buffers, socketFlags, out errorCode);
    }
}
