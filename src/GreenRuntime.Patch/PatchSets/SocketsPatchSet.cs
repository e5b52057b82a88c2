using System.Collections;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Synchronous <see cref="Socket"/> operations (SendTo, SendFile, Disconnect and closing included), at the large overloads (with <c>out SocketError</c>, or the
/// full parameter list) that every smaller overload, <see cref="NetworkStream"/>, <see cref="TcpClient"/>,
/// <see cref="TcpListener"/>, <see cref="UdpClient"/>, SslStream and HttpClient's synchronous path call; and the
/// asynchronous receive, send and connect funnels, for stackless greenlets; and HttpClient's Send and SendAsync and
/// SocketsHttpHandler's, whose token is linked to the greenlet's kill and timeouts, as are ClientWebSocket's operations;
/// and a named pipe server's wait for a client.
/// </summary>
internal sealed class SocketsPatchSet : PatchSet
{
    private static readonly Type S = typeof(Socket);
    private static readonly Type C = typeof(PatchedSocket);
    private static readonly Type Error = typeof(SocketError).MakeByRefType();
    private static readonly Type EndPointRef = typeof(EndPoint).MakeByRefType();
    private static readonly Type FlagsRef = typeof(SocketFlags).MakeByRefType();
    private static readonly Type PacketInfoOut = typeof(IPPacketInformation).MakeByRefType();

    public static readonly SocketsPatchSet Instance = new(); // after the fields its constructor uses

    public override string Name => "Sockets";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(S, "Receive", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), Error], C, "Receive", PatchedSocket.ReceiveArray),
        Point(S, "Receive", [typeof(Span<byte>), typeof(SocketFlags), Error], C, "Receive", PatchedSocket.ReceiveSpan),
        Point(S, "Receive", [typeof(IList<ArraySegment<byte>>), typeof(SocketFlags), Error], C, "Receive", PatchedSocket.ReceiveList),
        Point(S, "Send", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), Error], C, "Send", PatchedSocket.SendArray),
        Point(S, "Send", [typeof(ReadOnlySpan<byte>), typeof(SocketFlags), Error], C, "Send", PatchedSocket.SendSpan),
        Point(S, "Send", [typeof(IList<ArraySegment<byte>>), typeof(SocketFlags), Error], C, "Send", PatchedSocket.SendList),
        Point(S, "ReceiveFrom", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), EndPointRef], C, "ReceiveFrom", PatchedSocket.ReceiveFromArray),
        Point(S, "ReceiveFrom", [typeof(Span<byte>), typeof(SocketFlags), EndPointRef], C, "ReceiveFrom", PatchedSocket.ReceiveFromSpan),
        Point(S, "ReceiveFrom", [typeof(Span<byte>), typeof(SocketFlags), typeof(SocketAddress)], C, "ReceiveFrom", PatchedSocket.ReceiveFromAddress),
        Point(S, "ReceiveMessageFrom", [typeof(byte[]), typeof(int), typeof(int), FlagsRef, EndPointRef, PacketInfoOut], C, "ReceiveMessageFrom", PatchedSocket.ReceiveMessageFromArray),
        Point(S, "ReceiveMessageFrom", [typeof(Span<byte>), FlagsRef, EndPointRef, PacketInfoOut], C, "ReceiveMessageFrom", PatchedSocket.ReceiveMessageFromSpan),
        Point(S, "Accept", [], C, "Accept", PatchedSocket.AcceptSlot),
        Point(S, "Connect", [typeof(EndPoint)], C, "Connect", PatchedSocket.ConnectSlot),
        Point(S, "Poll", [typeof(int), typeof(SelectMode)], C, "Poll", PatchedSocket.PollSlot),
        Point(S, "Select", [typeof(IList), typeof(IList), typeof(IList), typeof(int)], C, "Select", PatchedSocket.SelectSlot),
        Point(S, "SendTo", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), typeof(EndPoint)], C, "SendTo", PatchedSocket.SendToArray),
        Point(S, "SendTo", [typeof(ReadOnlySpan<byte>), typeof(SocketFlags), typeof(EndPoint)], C, "SendTo", PatchedSocket.SendToSpan),
        Point(S, "SendTo", [typeof(ReadOnlySpan<byte>), typeof(SocketFlags), typeof(SocketAddress)], C, "SendTo", PatchedSocket.SendToAddress),
        Point(S, "Disconnect", [typeof(bool)], C, "Disconnect", PatchedSocket.DisconnectSlot),
        // Closing: greenlets parked on the socket wake at once, as blocked threads do.
        Point(typeof(SafeSocketHandle), "CloseAsIs", [typeof(bool)], C, "CloseAsIs", PatchedSocket.CloseAsIsSlot),
        Point(S, "SendFile", [typeof(string), typeof(ReadOnlySpan<byte>), typeof(ReadOnlySpan<byte>), typeof(TransmitFileOptions)], C, "SendFile", PatchedSocket.SendFileSlot),
        // The async funnels: for stackless greenlets, completed on the hub's reactor (PatchedSocket.Async.cs).
        Point(S, "ReceiveAsync", [typeof(Memory<byte>), typeof(SocketFlags), typeof(bool), typeof(CancellationToken)], C, "ReceiveAsync", PatchedSocket.ReceiveAsyncSlot),
        Point(S, "SendAsync", [typeof(ReadOnlyMemory<byte>), typeof(SocketFlags), typeof(CancellationToken)], C, "SendAsync", PatchedSocket.SendAsyncSlot),
        Point(S, "SendAsyncForNetworkStream", [typeof(ReadOnlyMemory<byte>), typeof(SocketFlags), typeof(CancellationToken)], C, "SendAsyncForNetworkStream", PatchedSocket.SendAsyncForNetworkStreamSlot),
        Point(S, "ConnectAsync", [typeof(EndPoint), typeof(CancellationToken)], C, "ConnectAsync", PatchedSocket.ConnectAsyncSlot),
        // The synchronous HttpClient funnel: the request's token also observes the greenlet's kill and timeouts.
        Point(typeof(System.Net.Http.HttpClient), "Send", [typeof(System.Net.Http.HttpRequestMessage), typeof(System.Net.Http.HttpCompletionOption), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "Send", CooperativeHttpClient.SendSlot),
        // The asynchronous ones HttpClient's async calls end in, started on a stackful greenlet: the same token.
        Point(typeof(System.Net.Http.HttpClient), "SendAsync", [typeof(System.Net.Http.HttpRequestMessage), typeof(System.Net.Http.HttpCompletionOption), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "SendAsync", CooperativeHttpClient.SendAsyncSlot),
        Point(typeof(System.Net.Http.HttpClient), "GetStringAsyncCore", [typeof(System.Net.Http.HttpRequestMessage), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "GetStringAsyncCore", CooperativeHttpClient.GetStringSlot),
        Point(typeof(System.Net.Http.HttpClient), "GetByteArrayAsyncCore", [typeof(System.Net.Http.HttpRequestMessage), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "GetByteArrayAsyncCore", CooperativeHttpClient.GetByteArraySlot),
        Point(typeof(System.Net.Http.HttpClient), "GetStreamAsyncCore", [typeof(System.Net.Http.HttpRequestMessage), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "GetStreamAsyncCore", CooperativeHttpClient.GetStreamSlot),
        // Every request of a SocketsHttpHandler, whatever sends it (an HttpMessageInvoker, a DelegatingHandler chain): the
        // same token, unless an HttpClient point above linked the request already.
        Point(typeof(System.Net.Http.SocketsHttpHandler), "Send", [typeof(System.Net.Http.HttpRequestMessage), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "HandlerSend", CooperativeHttpClient.HandlerSendSlot),
        Point(typeof(System.Net.Http.SocketsHttpHandler), "SendAsync", [typeof(System.Net.Http.HttpRequestMessage), typeof(CancellationToken)],
            typeof(CooperativeHttpClient), "HandlerSendAsync", CooperativeHttpClient.HandlerSendAsyncSlot),
        // A named pipe's accept (a Unix socket's, started asynchronously): cancelled when a kill or timeout ends the wait.
        Point(typeof(System.IO.Pipes.NamedPipeServerStream), "WaitForConnection", [], typeof(CooperativeNamedPipe), "WaitForConnection", CooperativeNamedPipe.WaitForConnectionSlot),
        // HttpListener's wait for the next request: one a kill or timeout abandoned is kept for the next GetContext.
        Point(typeof(System.Net.HttpListener), "GetContext", [], typeof(CooperativeHttpListener), "GetContext", CooperativeHttpListener.GetContextSlot),
        // ClientWebSocket operations a stackful greenlet starts (and waits for): cancelled by its kill and timeouts too.
        Point(typeof(System.Net.WebSockets.ClientWebSocket), "ReceiveAsync", [typeof(ArraySegment<byte>), typeof(CancellationToken)],
            typeof(CooperativeWebSocket), "ReceiveAsync", CooperativeWebSocket.ReceiveSlot),
        Point(typeof(System.Net.WebSockets.ClientWebSocket), "SendAsync", [typeof(ArraySegment<byte>), typeof(System.Net.WebSockets.WebSocketMessageType), typeof(bool), typeof(CancellationToken)],
            typeof(CooperativeWebSocket), "SendAsync", CooperativeWebSocket.SendSlot),
        Point(typeof(System.Net.WebSockets.ClientWebSocket), "ConnectAsync", [typeof(Uri), typeof(CancellationToken)],
            typeof(CooperativeWebSocket), "ConnectAsync", CooperativeWebSocket.ConnectSlot),
    ];

    /// <summary>AcceptAsync returns <c>ValueTask&lt;Socket&gt;</c>, a struct returned through a hidden buffer, which the detour
    /// engine refuses for instance methods; its Task overloads end in the same method.</summary>
    public override IReadOnlyList<(string Method, string Reason, bool Blocks)> KnownRefusals { get; } =
    [
        ("System.Net.Sockets.Socket.AcceptAsync(Socket, CancellationToken)",
            "returns ValueTask<Socket> through a hidden return buffer, which the detour engine does not patch on instance methods: an AcceptAsync of a stackless greenlet runs on .NET's socket engine (accepted sockets are then served on the reactor)", Blocks: false),
    ];
}
