using System.IO.Pipes;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="NamedPipeServerStream.WaitForConnection"/> on a greenlet: its asynchronous form, cancelled when a kill or
/// timeout ends the wait.
/// </summary>
/// <remarks>On Unix the original is an accept on the pipe's listening socket, started asynchronously and waited for.
/// Waited for by the Tasks set, a kill or timeout abandoned that accept but left it running: it took the next client's
/// connection for nobody, and the next <c>WaitForConnection</c> never returned. Cancelled, it withdraws, as a thread's
/// <c>WaitForConnectionAsync(token)</c> does.</remarks>
internal static class CooperativeNamedPipe
{
    internal static readonly OriginalSlot<Action<NamedPipeServerStream>> WaitForConnectionSlot = new(static server => server.WaitForConnection());

    /// <summary>Replaces <see cref="NamedPipeServerStream.WaitForConnection"/>.</summary>
    public static void WaitForConnection(NamedPipeServerStream server)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null)
        {
            WaitForConnectionSlot.Call(server);
            return;
        }
        using var cancel = new CancellationTokenSource();
        Task connected;
        try
        {
            connected = server.WaitForConnectionAsync(cancel.Token);
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException or IOException)
        {
            WaitForConnectionSlot.Call(server); // already connected, disposed...: the original's own exception
            return;
        }
        Cooperative.Park(hub, connected, null, WaitReason.Socket, cancel);
        connected.GetAwaiter().GetResult();
    }
}
