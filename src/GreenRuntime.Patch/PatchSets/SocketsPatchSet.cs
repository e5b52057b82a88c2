using System.Collections;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Synchronous <see cref="Socket"/> operations, at the large overloads (with <c>out SocketError</c>, or the
/// full parameter list) that every smaller overload, <see cref="NetworkStream"/>, <see cref="TcpClient"/>,
/// <see cref="TcpListener"/>, <see cref="UdpClient"/>, SslStream and HttpClient's synchronous path call.
/// </summary>
internal sealed class SocketsPatchSet : PatchSet
{
    private static readonly Type S = typeof(Socket);
    private static readonly Type C = typeof(CooperativeSocket);
    private static readonly Type Error = typeof(SocketError).MakeByRefType();
    private static readonly Type EndPointRef = typeof(EndPoint).MakeByRefType();
    private static readonly Type FlagsRef = typeof(SocketFlags).MakeByRefType();
    private static readonly Type PacketInfoOut = typeof(IPPacketInformation).MakeByRefType();

    public static readonly SocketsPatchSet Instance = new(); // after the fields its constructor uses

    public override string Name => "Sockets";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(S, "Receive", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), Error], C, "Receive", CooperativeSocket.ReceiveArray),
        Point(S, "Receive", [typeof(Span<byte>), typeof(SocketFlags), Error], C, "Receive", CooperativeSocket.ReceiveSpan),
        Point(S, "Receive", [typeof(IList<ArraySegment<byte>>), typeof(SocketFlags), Error], C, "Receive", CooperativeSocket.ReceiveList),
        Point(S, "Send", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), Error], C, "Send", CooperativeSocket.SendArray),
        Point(S, "Send", [typeof(ReadOnlySpan<byte>), typeof(SocketFlags), Error], C, "Send", CooperativeSocket.SendSpan),
        Point(S, "Send", [typeof(IList<ArraySegment<byte>>), typeof(SocketFlags), Error], C, "Send", CooperativeSocket.SendList),
        Point(S, "ReceiveFrom", [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), EndPointRef], C, "ReceiveFrom", CooperativeSocket.ReceiveFromArray),
        Point(S, "ReceiveFrom", [typeof(Span<byte>), typeof(SocketFlags), EndPointRef], C, "ReceiveFrom", CooperativeSocket.ReceiveFromSpan),
        Point(S, "ReceiveFrom", [typeof(Span<byte>), typeof(SocketFlags), typeof(SocketAddress)], C, "ReceiveFrom", CooperativeSocket.ReceiveFromAddress),
        Point(S, "ReceiveMessageFrom", [typeof(byte[]), typeof(int), typeof(int), FlagsRef, EndPointRef, PacketInfoOut], C, "ReceiveMessageFrom", CooperativeSocket.ReceiveMessageFromArray),
        Point(S, "ReceiveMessageFrom", [typeof(Span<byte>), FlagsRef, EndPointRef, PacketInfoOut], C, "ReceiveMessageFrom", CooperativeSocket.ReceiveMessageFromSpan),
        Point(S, "Accept", [], C, "Accept", CooperativeSocket.AcceptSlot),
        Point(S, "Connect", [typeof(EndPoint)], C, "Connect", CooperativeSocket.ConnectSlot),
        Point(S, "Poll", [typeof(int), typeof(SelectMode)], C, "Poll", CooperativeSocket.PollSlot),
        Point(S, "Select", [typeof(IList), typeof(IList), typeof(IList), typeof(int)], C, "Select", CooperativeSocket.SelectSlot),
    ];

    public override IReadOnlyList<(string Method, string Reason)> KnownRefusals { get; } =
    [
        ("System.Net.Sockets.Socket.SendTo(...)", "Not made cooperative: a datagram send blocks only while the kernel send buffer is full, and .NET offers no writability notification to park on; it runs the original."),
        ("System.Net.Sockets.Socket.SendFile(...)", "Not made cooperative: the file is sent by the kernel (sendfile) in one blocking call; it runs the original."),
        ("System.Net.Sockets.Socket.Disconnect(Boolean)", "Not made cooperative: it runs the original (a shutdown does not wait for the peer)."),
    ];
}
