using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.CompilerServices;
using Layer = GreenRuntime.LowLevel.CooperativeSocket;

namespace GreenRuntime.Cooperative;

// The async socket calls of stackless greenlets: completed through the hub's reactor (the core's
// CooperativeSocket.Try*Async), so awaiting code on the hub is resumed by the hub's own thread instead of .NET's
// socket engine and the thread pool. Each replacement is a funnel the public overloads, NetworkStream (and so
// SslStream, StreamReader, HttpClient's connections) reach on .NET 10:
//   ReceiveAsync(Memory<byte>, SocketFlags, bool fromNetworkStream, CancellationToken)  <- every ValueTask/Task receive
//   SendAsync(ReadOnlyMemory<byte>, SocketFlags, CancellationToken)                     <- every ValueTask/Task send
//   SendAsyncForNetworkStream(ReadOnlyMemory<byte>, SocketFlags, CancellationToken)     <- NetworkStream.WriteAsync
//   ConnectAsync(EndPoint, CancellationToken)                                           <- every IP-endpoint connect
// Whatever the layer declines (a stackful greenlet, which parks in the blocking calls instead; off a hub; a datagram
// socket; a token already cancelled; unusual flags) runs the original, which also throws every argument and
// disposed-socket exception itself. Failures are the original's: a SocketException with the same SocketError, wrapped
// in the same IOException for a NetworkStream, an OperationCanceledException for a cancelled token.
internal static partial class PatchedSocket
{
    internal delegate ValueTask<int> ReceiveMemory(Socket s, Memory<byte> buffer, SocketFlags flags, bool fromNetworkStream, CancellationToken cancel);
    internal delegate ValueTask<int> SendMemory(Socket s, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancel);
    internal delegate ValueTask SendMemoryForStream(Socket s, ReadOnlyMemory<byte> buffer, SocketFlags flags, CancellationToken cancel);

    internal static readonly OriginalSlot<ReceiveMemory> ReceiveAsyncSlot = new(static (s, b, f, n, c) => ReceiveAsyncInternal(s, b, f, n, c));
    internal static readonly OriginalSlot<SendMemory> SendAsyncSlot = new(static (s, b, f, c) => s.SendAsync(b, f, c));
    internal static readonly OriginalSlot<SendMemoryForStream> SendAsyncForNetworkStreamSlot = new(static (s, b, f, c) => SendAsyncForNetworkStreamInternal(s, b, f, c));
    internal static readonly OriginalSlot<Func<Socket, EndPoint, CancellationToken, ValueTask>> ConnectAsyncSlot = new(static (s, ep, c) => s.ConnectAsync(ep, c));

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "ReceiveAsync")]
    private static extern ValueTask<int> ReceiveAsyncInternal(Socket s, Memory<byte> buffer, SocketFlags socketFlags, bool fromNetworkStream, CancellationToken cancellationToken);

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "SendAsyncForNetworkStream")]
    private static extern ValueTask SendAsyncForNetworkStreamInternal(Socket s, ReadOnlyMemory<byte> buffer, SocketFlags socketFlags, CancellationToken cancellationToken);

    // NetworkStream's failures: the SocketException inside an IOException whose message is .NET's own (localized) text.
    private static readonly Lazy<string> s_readFailureFormat = new(() => NetResource("net_io_readfailure", "Unable to read data from the transport connection: {0}."));
    private static readonly Lazy<string> s_writeFailureFormat = new(() => NetResource("net_io_writefailure", "Unable to write data to the transport connection: {0}."));
    private static readonly Func<SocketError, Exception> s_streamReadFailure = error => StreamFailure(error, s_readFailureFormat.Value);
    private static readonly Func<SocketError, Exception> s_streamWriteFailure = error => StreamFailure(error, s_writeFailureFormat.Value);

    public static ValueTask<int> ReceiveAsync(Socket s, Memory<byte> buffer, SocketFlags socketFlags, bool fromNetworkStream, CancellationToken cancellationToken)
    {
        if (s is not null && Layer.TryReceiveAsync(s, buffer, socketFlags, cancellationToken, fromNetworkStream ? s_streamReadFailure : null, out var result))
            return result;
        return ReceiveAsyncSlot.Call(s!, buffer, socketFlags, fromNetworkStream, cancellationToken);
    }

    public static ValueTask<int> SendAsync(Socket s, ReadOnlyMemory<byte> buffer, SocketFlags socketFlags, CancellationToken cancellationToken)
    {
        if (s is not null && Layer.TrySendAsync(s, buffer, socketFlags, cancellationToken, null, out ValueTask<int> result))
            return result;
        return SendAsyncSlot.Call(s!, buffer, socketFlags, cancellationToken);
    }

    public static ValueTask SendAsyncForNetworkStream(Socket s, ReadOnlyMemory<byte> buffer, SocketFlags socketFlags, CancellationToken cancellationToken)
    {
        if (s is not null && Layer.TrySendAsync(s, buffer, socketFlags, cancellationToken, s_streamWriteFailure, out ValueTask result))
            return result;
        return SendAsyncForNetworkStreamSlot.Call(s!, buffer, socketFlags, cancellationToken);
    }

    public static ValueTask ConnectAsync(Socket s, EndPoint remoteEP, CancellationToken cancellationToken)
    {
        if (s is not null && remoteEP is not null && Layer.TryConnectAsync(s, remoteEP, cancellationToken, out var result))
            return result;
        return ConnectAsyncSlot.Call(s!, remoteEP!, cancellationToken);
    }

    private static IOException StreamFailure(SocketError error, string format)
    {
        var inner = new SocketException((int)error);
        return new IOException(string.Format(format, inner.Message), inner);
    }

    /// <summary>A resource string of System.Net.Sockets (what its NetworkStream puts in its messages), or the English text.</summary>
    private static string NetResource(string name, string fallback)
    {
        try
        {
            var resources = typeof(Socket).Assembly.GetType("System.SR");
            return resources?.GetProperty(name, BindingFlags.NonPublic | BindingFlags.Static)?.GetValue(null) as string ?? fallback;
        }
        catch (Exception e) when (e is TargetInvocationException or MemberAccessException)
        {
            return fallback;
        }
    }
}
