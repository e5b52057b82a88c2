// Binding the listening sockets of a server: one, or one per hub of a HubGroup sharing the port with SO_REUSEPORT.
//
// With SO_REUSEPORT set on every one of them before bind, several sockets may listen on the same address and port;
// the kernel gives each incoming connection to one of them, chosen by a hash of the connection's addresses and ports,
// so each listener has its own accept queue and no two accept loops ever contend for one connection. Port 0 is
// resolved by binding the first socket, then binding the others to the port it got.
//
// Rejected: one listener whose accept loop hands connections to the other hubs (a cross-hub hop for every
// connection, and one hub's loop becomes the bottleneck); several hubs accepting on one shared listener (every
// hub's epoll wakes for every connection, and all but one find nothing: the thundering herd).

using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Servers;

/// <summary>Creates the bound, listening sockets of a server.</summary>
internal static class Listeners
{
    private const int SolSocket = 1;   // SOL_SOCKET on Linux
    private const int SoReuseAddr = 2;  // SO_REUSEADDR on Linux
    private const int SoReusePort = 15; // SO_REUSEPORT on Linux

    /// <summary>Sets SO_REUSEPORT on a socket that is not bound yet. Replaceable by tests, to see how a refusal is reported.</summary>
    internal static Action<Socket> SetReusePort = static socket => Enable(socket, SoReusePort);

    private static void Enable(Socket socket, int option) => socket.SetRawSocketOption(SolSocket, option, BitConverter.GetBytes(1));

    /// <summary>
    /// Binds and listens: one socket, or (<paramref name="count"/> &gt; 1) <paramref name="count"/> sockets sharing
    /// the address and port with SO_REUSEPORT. On any failure the sockets already made are closed.
    /// </summary>
    /// <exception cref="SocketException">The address could not be bound (in use, not local, not permitted).</exception>
    /// <exception cref="NotSupportedException">Several listeners are needed but the system refuses SO_REUSEPORT.</exception>
    public static Socket[] Bind(IPEndPoint listen, int count, int backlog)
    {
        if (count > 1 && !OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("A server on a HubGroup binds one listener per hub with SO_REUSEPORT, which is implemented for Linux only. Run the server on one hub (no HubGroup) on this system.");
        var sockets = new List<Socket>(count);
        try
        {
            if (count > 1 && listen.Port != 0) RefuseIfListenedOn(listen);
            var endPoint = listen;
            for (int i = 0; i < count; i++)
            {
                var socket = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                if (count > 1) EnableReusePort(socket);
                socket.Bind(endPoint);
                socket.Listen(backlog);
                // Port 0: the others join the port the first one got.
                if (i == 0) endPoint = (IPEndPoint)socket.LocalEndPoint!;
            }
            return sockets.ToArray();
        }
        catch
        {
            foreach (var s in sockets) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Fails with <see cref="SocketError.AddressAlreadyInUse"/> when something listens on <paramref name="listen"/>,
    /// as a one-hub server's bind does. Without this check, a second server of the same user (another instance, a stale
    /// process) would join the port's SO_REUSEPORT group and silently take a share of the connections. The probe sets
    /// SO_REUSEADDR so that connections in TIME_WAIT on the port do not count, only a listener; as a raw option, because
    /// .NET's <see cref="SocketOptionName.ReuseAddress"/> sets SO_REUSEPORT as well on Linux, which would join the group.
    /// </summary>
    private static void RefuseIfListenedOn(IPEndPoint listen)
    {
        using var probe = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        Enable(probe, SoReuseAddr);
        probe.Bind(listen);
    }

    private static void EnableReusePort(Socket socket)
    {
        try
        {
            SetReusePort(socket);
        }
        catch (SocketException e)
        {
            throw new NotSupportedException(
                $"The system refused SO_REUSEPORT ({e.SocketErrorCode}: {e.Message}), which a server on a HubGroup needs to give each hub a listener of its own. Run the server on one hub (no HubGroup), or on a kernel that supports SO_REUSEPORT (Linux 3.9 and later).", e);
        }
    }
}
