using System.Collections;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

/// <summary>
/// The patched synchronous <see cref="Socket"/> methods (replacements of the Sockets patch set). Only blocking-mode
/// sockets are affected; a non-blocking socket, and every call off a parking hub, runs the original.
/// </summary>
/// <remarks>
/// <para>Each replacement decides only what is the patch's business (is this a call to make cooperative, which
/// timeout does the socket ask for, which exception would the original throw) and leaves the waiting to the one
/// cooperative socket layer of the core, <see cref="GreenRuntime.LowLevel.CooperativeSocket"/>, which the servers
/// use too: the non-blocking system call parked on the hub's reactor where there is one, otherwise .NET's async
/// operations, timeouts and kills.</para>
/// <para>By concern: receives (PatchedSocket.Receive.cs), sends and SendFile (PatchedSocket.Send.cs), datagram
/// ReceiveFrom/ReceiveMessageFrom/SendTo (PatchedSocket.Datagram.cs), Accept/Connect/Disconnect/closing
/// (PatchedSocket.Connect.cs), Poll/Select (PatchedSocket.Poll.cs).</para>
/// <para>Timeouts are the socket's own: <see cref="Socket.ReceiveTimeout"/> for receives,
/// <see cref="Socket.SendTimeout"/> for sends (SocketError.TimedOut, as the original reports it).</para>
/// <para>The first cooperative operation may put the socket's file descriptor in non-blocking mode (as any
/// .NET async socket operation does); <see cref="Socket.Blocking"/> stays true and later synchronous calls
/// off the hub keep their blocking behaviour and timeouts.</para>
/// </remarks>
internal static partial class PatchedSocket
{
    internal delegate int ArrayIo(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, out SocketError error);
    internal delegate int SpanReceive(Socket s, Span<byte> buffer, SocketFlags flags, out SocketError error);
    internal delegate int SpanSend(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, out SocketError error);
    internal delegate int ListIo(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags flags, out SocketError error);
    internal delegate int ArrayReceiveFrom(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, ref EndPoint remote);
    internal delegate int SpanReceiveFrom(Socket s, Span<byte> buffer, SocketFlags flags, ref EndPoint remote);
    internal delegate int SpanReceiveFromAddress(Socket s, Span<byte> buffer, SocketFlags flags, SocketAddress address);
    internal delegate int ArrayReceiveMessageFrom(Socket s, byte[] buffer, int offset, int size, ref SocketFlags flags, ref EndPoint remote, out IPPacketInformation info);
    internal delegate int SpanReceiveMessageFrom(Socket s, Span<byte> buffer, ref SocketFlags flags, ref EndPoint remote, out IPPacketInformation info);
    internal delegate void SelectFn(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds);
    internal delegate int ArraySendTo(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, EndPoint remote);
    internal delegate int SpanSendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, EndPoint remote);
    internal delegate int SpanSendToAddress(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, SocketAddress address);
    internal delegate void SendFileFn(Socket s, string? fileName, ReadOnlySpan<byte> preBuffer, ReadOnlySpan<byte> postBuffer, TransmitFileOptions flags);

    internal static readonly OriginalSlot<ArrayIo> ReceiveArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, out SocketError e) => s.Receive(b, o, n, f, out e));
    internal static readonly OriginalSlot<SpanReceive> ReceiveSpan = new(static (Socket s, Span<byte> b, SocketFlags f, out SocketError e) => s.Receive(b, f, out e));
    internal static readonly OriginalSlot<ListIo> ReceiveList = new(static (Socket s, IList<ArraySegment<byte>> b, SocketFlags f, out SocketError e) => s.Receive(b, f, out e));
    internal static readonly OriginalSlot<ArrayIo> SendArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, out SocketError e) => s.Send(b, o, n, f, out e));
    internal static readonly OriginalSlot<SpanSend> SendSpan = new(static (Socket s, ReadOnlySpan<byte> b, SocketFlags f, out SocketError e) => s.Send(b, f, out e));
    internal static readonly OriginalSlot<ListIo> SendList = new(static (Socket s, IList<ArraySegment<byte>> b, SocketFlags f, out SocketError e) => s.Send(b, f, out e));
    internal static readonly OriginalSlot<ArrayReceiveFrom> ReceiveFromArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, ref EndPoint r) => s.ReceiveFrom(b, o, n, f, ref r));
    internal static readonly OriginalSlot<SpanReceiveFrom> ReceiveFromSpan = new(static (Socket s, Span<byte> b, SocketFlags f, ref EndPoint r) => s.ReceiveFrom(b, f, ref r));
    internal static readonly OriginalSlot<SpanReceiveFromAddress> ReceiveFromAddress = new(static (Socket s, Span<byte> b, SocketFlags f, SocketAddress a) => s.ReceiveFrom(b, f, a));
    internal static readonly OriginalSlot<ArrayReceiveMessageFrom> ReceiveMessageFromArray = new(static (Socket s, byte[] b, int o, int n, ref SocketFlags f, ref EndPoint r, out IPPacketInformation i) => s.ReceiveMessageFrom(b, o, n, ref f, ref r, out i));
    internal static readonly OriginalSlot<SpanReceiveMessageFrom> ReceiveMessageFromSpan = new(static (Socket s, Span<byte> b, ref SocketFlags f, ref EndPoint r, out IPPacketInformation i) => s.ReceiveMessageFrom(b, ref f, ref r, out i));
    internal static readonly OriginalSlot<Func<Socket, Socket>> AcceptSlot = new(static s => s.Accept());
    internal static readonly OriginalSlot<Action<Socket, EndPoint>> ConnectSlot = new(static (s, ep) => s.Connect(ep));
    internal static readonly OriginalSlot<Func<Socket, int, SelectMode, bool>> PollSlot = new(static (s, us, m) => s.Poll(us, m));
    internal static readonly OriginalSlot<SelectFn> SelectSlot = new(static (r, w, e, us) => Socket.Select(r, w, e, us));
    internal static readonly OriginalSlot<ArraySendTo> SendToArray = new(static (s, b, o, n, f, r) => s.SendTo(b, o, n, f, r));
    internal static readonly OriginalSlot<SpanSendTo> SendToSpan = new(static (s, b, f, r) => s.SendTo(b, f, r));
    internal static readonly OriginalSlot<SpanSendToAddress> SendToAddress = new(static (s, b, f, a) => s.SendTo(b, f, a));
    internal static readonly OriginalSlot<Action<Socket, bool>> DisconnectSlot = new(static (s, reuse) => s.Disconnect(reuse));
    internal static readonly OriginalSlot<Action<SafeSocketHandle, bool>> CloseAsIsSlot = new(CloseAsIsCore);
    internal static readonly OriginalSlot<SendFileFn> SendFileSlot = new(static (s, n, pre, post, f) => s.SendFile(n, pre, post, f));

    [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Method, Name = "CloseAsIs")]
    private static extern void CloseAsIsCore(SafeSocketHandle handle, bool abortive); // internal

    // Not Socket.Handle: reading it marks the handle as exposed, which changes how .NET treats the socket.
    private static bool MayPark(Socket s) => s.Blocking;

    /// <summary>Whether a call on <paramref name="s"/> takes the cooperative path: on a greenlet that may park, and a
    /// blocking socket (a non-blocking one must keep failing with WouldBlock, as the original does).</summary>
    private static bool Cooperates(Socket s) => Cooperative.ParkingHub() is not null && MayPark(s);

    /// <summary>Whether the arguments name a slice of an array; anything else goes to the original, which throws its own
    /// exception for them.</summary>
    private static bool IsSlice([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] byte[]? buffer, int offset, int size) =>
        buffer is not null && (uint)offset <= (uint)buffer.Length && (uint)size <= (uint)(buffer.Length - offset);

    private static TimeSpan? ReceiveTimeout(Socket s) => Cooperative.SocketTimeout(s.ReceiveTimeout);

    private static TimeSpan? SendTimeout(Socket s) => Cooperative.SocketTimeout(s.SendTimeout);
}
