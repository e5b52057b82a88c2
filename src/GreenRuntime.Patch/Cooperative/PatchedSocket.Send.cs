using System.Net.Sockets;
using Layer = GreenRuntime.LowLevel.CooperativeSocket;

namespace GreenRuntime.Cooperative;

// Stream sends: the core's cooperative Send (the system call on the reactor, or a pooled copy sent with SendAsync),
// with the socket's SendTimeout; what was sent before a timeout stays sent, as with the original. SendFile parks on
// SendFileAsync.
internal static partial class PatchedSocket
{
    public static int Send(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || !IsSlice(buffer, offset, size) || size == 0)
            return SendArray.Call(s, buffer!, offset, size, socketFlags, out errorCode);
        return Layer.Send(s, buffer.AsSpan(offset, size), socketFlags, SendTimeout(s), out errorCode);
    }

    public static int Send(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || buffer.IsEmpty)
            return SendSpan.Call(s, buffer, socketFlags, out errorCode);
        return Layer.Send(s, buffer, socketFlags, SendTimeout(s), out errorCode);
    }

    public static int Send(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags socketFlags, out SocketError errorCode)
    {
        if (!Cooperates(s) || buffers is null || buffers.Count == 0)
            return SendList.Call(s, buffers!, socketFlags, out errorCode);
        // SendAsync(IList) takes no CancellationToken, so a kill could not stop it: gather into one buffer.
        int total = 0;
        foreach (var segment in buffers)
        {
            if (segment.Array is null) return SendList.Call(s, buffers, socketFlags, out errorCode); // the original's ArgumentException
            total += segment.Count;
        }
        if (total == 0) return SendList.Call(s, buffers, socketFlags, out errorCode);
        var copy = IoBuffers.Pool.Rent(total);
        int at = 0;
        foreach (var segment in buffers)
        {
            segment.AsSpan().CopyTo(copy.AsSpan(at));
            at += segment.Count;
        }
        try
        {
            return Layer.Send(s, copy.AsSpan(0, total), socketFlags, SendTimeout(s), out errorCode);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    public static void SendFile(Socket s, string? fileName, ReadOnlySpan<byte> preBuffer, ReadOnlySpan<byte> postBuffer, TransmitFileOptions flags)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || !s.Connected || !CanOpen(fileName))
        {
            // Off the hub, and every case in which the original throws before sending (not connected, a file it
            // cannot open): the original, with its own exception.
            SendFileSlot.Call(s, fileName, preBuffer, postBuffer, flags);
            return;
        }
        // The spans cannot outlive this frame: SendFileAsync gets copies (they are ours, so a kill may abandon them).
        byte[] pre = preBuffer.ToArray(), post = postBuffer.ToArray();
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = s.SendFileAsync(fileName, pre, post, flags, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or ArgumentException)
        {
            SendFileSlot.Call(s, fileName, preBuffer, postBuffer, flags);
            return;
        }
        // drain: the file stays open until the operation is over, as with the original.
        if (!Cooperative.Park(hub, task, SendTimeout(s), WaitReason.Socket, cancel, drain: true))
        {
            Parking.CancelQuietly(cancel);
            Parking.WaitBlocking(task);
            if (!task.IsCompletedSuccessfully) throw new SocketException((int)SocketError.TimedOut);
        }
        task.GetAwaiter().GetResult();
    }

    private static bool CanOpen(string? fileName)
    {
        if (fileName is null) return true;
        try
        {
            using (Cooperative.Bypass())
                new FileStream(fileName, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None).Dispose();
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return false;
        }
    }
}
