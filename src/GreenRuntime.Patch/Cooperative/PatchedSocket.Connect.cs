using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

// Connection set-up and tear-down. Connect is the core's cooperative connect (a non-blocking connect waited for on
// the reactor, or ConnectAsync); a DnsEndPoint runs the original, which resolves through the patched Dns and comes
// back here once per address. Accept is the core's cooperative accept (on the reactor where there is one);
// Disconnect parks on DisconnectAsync. Closing (SafeSocketHandle.CloseAsIs, where every Socket.Dispose and Close of a
// socket that owns its handle ends) runs the original, then ends at once the waits of greenlets parked on the socket, as
// closing a socket wakes the threads blocked in it. Socket.Dispose(bool) itself is virtual and has no code the detour
// engine can find before its first call; Close and Dispose() are small enough to be inlined into their callers.
internal static partial class PatchedSocket
{
    public static void CloseAsIs(SafeSocketHandle handle, bool abortive)
    {
        CloseAsIsSlot.Call(handle, abortive);
        GreenRuntime.LowLevel.CooperativeSocket.NotifyClosed(handle);
    }

    public static Socket Accept(Socket s)
    {
        var hub = Cooperative.ParkingHub();
        // Not listening, wrong socket type...: the core's Accept runs the original then, for its own exception.
        if (hub is null || !MayPark(s)) return AcceptSlot.Call(s);
        return GreenRuntime.LowLevel.CooperativeSocket.Accept(s);
    }

    public static void Connect(Socket s, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        // A DnsEndPoint goes through Dns and Connect(IPAddress[]), which come back here per address.
        if (hub is null || !MayPark(s) || remoteEP is null or DnsEndPoint || s.Connected)
        {
            ConnectSlot.Call(s, remoteEP!);
            return;
        }
        GreenRuntime.LowLevel.CooperativeSocket.Connect(s, remoteEP);
    }

    public static void Disconnect(Socket s, bool reuseSocket)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || !s.Connected)
        {
            DisconnectSlot.Call(s, reuseSocket);
            return;
        }
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = s.DisconnectAsync(reuseSocket, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or PlatformNotSupportedException)
        {
            DisconnectSlot.Call(s, reuseSocket);
            return;
        }
        if (task.IsFaulted && task.Exception!.InnerException is not SocketException)
        {
            DisconnectSlot.Call(s, reuseSocket); // e.g. PlatformNotSupportedException for reuseSocket: the original's own
            return;
        }
        Cooperative.Park(hub, task, null, WaitReason.Socket, cancel, drain: true);
        task.GetAwaiter().GetResult();
    }
}
