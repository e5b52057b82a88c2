using System.Net.WebSockets;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="ClientWebSocket"/>'s receive, send and connect started on a stackful greenlet: the operation gets a token
/// that the greenlet's kill and its open timeouts cancel as well (<see cref="Parking.LinkCancellation"/>).
/// </summary>
/// <remarks>
/// Legacy code waits for these with <c>.GetAwaiter().GetResult()</c> and passes no token. A kill or timeout ended that
/// wait but not the receive behind it, which kept the socket's one receive turn and took the next message: a reply
/// meant for the greenlet that received next went to the dead one, and that greenlet got the dead one's reply. With the
/// token cancelled the socket is aborted, as on a thread whose token was cancelled. Only the <c>ArraySegment</c>
/// overloads: the <c>Memory</c> ones return a <c>ValueTask</c>, which the detour engine refuses on instance methods.
/// Stackless greenlets are left alone: their awaits interleave, so a timeout scope open when an operation starts need
/// not contain it (pass <see cref="Greenlet.CancellationToken"/> there).
/// </remarks>
internal static class CooperativeWebSocket
{
    internal static readonly OriginalSlot<Func<ClientWebSocket, ArraySegment<byte>, CancellationToken, Task<WebSocketReceiveResult>>> ReceiveSlot =
        new(static (socket, buffer, token) => socket.ReceiveAsync(buffer, token));
    internal static readonly OriginalSlot<Func<ClientWebSocket, ArraySegment<byte>, WebSocketMessageType, bool, CancellationToken, Task>> SendSlot =
        new(static (socket, buffer, type, end, token) => socket.SendAsync(buffer, type, end, token));
    internal static readonly OriginalSlot<Func<ClientWebSocket, Uri, CancellationToken, Task>> ConnectSlot =
        new(static (socket, uri, token) => socket.ConnectAsync(uri, token));

    /// <summary>Replaces <see cref="ClientWebSocket.ReceiveAsync(ArraySegment{byte}, CancellationToken)"/>.</summary>
    public static Task<WebSocketReceiveResult> ReceiveAsync(ClientWebSocket socket, ArraySegment<byte> buffer, CancellationToken cancellationToken) =>
        Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked)
            ? Cooperative.DisposeAfter(ReceiveSlot.Call(socket, buffer, token), linked)
            : ReceiveSlot.Call(socket, buffer, cancellationToken);

    /// <summary>Replaces <see cref="ClientWebSocket.SendAsync(ArraySegment{byte}, WebSocketMessageType, bool, CancellationToken)"/>.</summary>
    public static Task SendAsync(ClientWebSocket socket, ArraySegment<byte> buffer, WebSocketMessageType messageType, bool endOfMessage, CancellationToken cancellationToken) =>
        Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked)
            ? Cooperative.DisposeAfter(SendSlot.Call(socket, buffer, messageType, endOfMessage, token), linked)
            : SendSlot.Call(socket, buffer, messageType, endOfMessage, cancellationToken);

    /// <summary>Replaces <see cref="ClientWebSocket.ConnectAsync(Uri, CancellationToken)"/>.</summary>
    public static Task ConnectAsync(ClientWebSocket socket, Uri uri, CancellationToken cancellationToken) =>
        Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked)
            ? Cooperative.DisposeAfter(ConnectSlot.Call(socket, uri, token), linked)
            : ConnectSlot.Call(socket, uri, cancellationToken);
}
