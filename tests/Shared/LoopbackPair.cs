using System.Net;
using System.Net.Sockets;

// Shared by the test projects that need a connected TCP pair on loopback (linked into each: see their .csproj).

namespace GreenRuntime.TestSupport;

/// <summary>Two connected TCP sockets on loopback, made with the sockets' own blocking calls.</summary>
internal static class LoopbackPair
{
    /// <summary>A connected pair: <c>A</c> connected, <c>B</c> accepted. The caller disposes both.</summary>
    public static (Socket A, Socket B) Connect()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var a = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        a.Connect(listener.LocalEndPoint!);
        return (a, listener.Accept());
    }
}
