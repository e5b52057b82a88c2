using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

public static partial class CooperativeSocket
{
    /// <summary>
    /// Sends all of <paramref name="data"/>, parking while the kernel's buffer is full.
    /// </summary>
    /// <remarks>A kill or an expired timeout of the greenlet ends the send while nothing of it went out. Once part of it
    /// did (on the reactor path: stream sockets, and the pipes .NET wraps in a Socket, on Linux x64), they are held back
    /// until the rest is sent, the socket fails or it is closed, and are thrown at the greenlet's next blocking point:
    /// like the blocking original, the send never stops halfway, which would cut the message and corrupt the stream for
    /// every later write. Without the reactor the send is .NET's <c>SendAsync</c>, and a kill cancels it wherever it
    /// is.</remarks>
    /// <param name="socket">A connected stream socket (or a connected datagram socket: one datagram).</param>
    /// <param name="data">What to send. The caller may reuse it as soon as the call returns, whatever the outcome.</param>
    /// <param name="flags">As for <see cref="Socket.Send(ReadOnlySpan{byte}, SocketFlags, out SocketError)"/>.</param>
    /// <param name="timeout">How long the peer may take to make room (for the whole send).</param>
    /// <param name="error"><see cref="SocketError.Success"/>, <see cref="SocketError.TimedOut"/>, or the socket's error.</param>
    /// <returns>The bytes sent: all of them on success; what went out before an error or the timeout otherwise (what was
    /// sent stays sent, as with <see cref="Socket.SendTimeout"/>).</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    /// <exception cref="ObjectDisposedException">The socket was disposed before the call.</exception>
    public static int Send(Socket socket, ReadOnlySpan<byte> data, SocketFlags flags, TimeSpan? timeout, out SocketError error)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = RequireHub();
        if (SocketIo.TrySend(hub, socket, data, flags, timeout, out int sent, out error))
            return sent;
        // The async path: a span cannot outlive this frame, so SendAsync gets a pooled copy (drained before it goes back).
        var copy = IoBuffers.Pool.Rent(Math.Max(1, data.Length));
        data.CopyTo(copy);
        try
        {
            return SendParked(socket, copy.AsMemory(0, data.Length), flags, timeout, out error);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    /// <summary>The async path: SendAsync until everything went out (on stream sockets .NET sends it all in one operation;
    /// the loop only guards the promise of <see cref="Send"/>), an error, or the timeout.</summary>
    private static int SendParked(Socket socket, ReadOnlyMemory<byte> data, SocketFlags flags, TimeSpan? timeout, out SocketError error)
    {
        int total = 0;
        while (true)
        {
            int n = SendOnceParked(socket, data[total..], flags, timeout, out error);
            total += n;
            if (error != SocketError.Success || n == 0 || total >= data.Length) return total;
        }
    }

    private static int SendOnceParked(Socket socket, ReadOnlyMemory<byte> data, SocketFlags flags, TimeSpan? timeout, out SocketError error)
    {
        using var cancel = new CancellationTokenSource();
        Task<int> send;
        try
        {
            send = socket.SendAsync(data, flags, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            using (Parking.SuppressCooperation())
                return socket.Send(data.Span, flags, out error); // the socket's own exception or error
        }
        // drain: the operation reads the copy; it must be over before the copy goes back to the pool.
        if (!Park(send, timeout, cancel, drain: true))
        {
            CancelQuietly(cancel);
            WaitBlocking(send);
            if (!send.IsCompletedSuccessfully)
            {
                error = SocketError.TimedOut;
                return 0;
            }
        }
        if (send.IsCompletedSuccessfully)
        {
            error = SocketError.Success;
            return send.Result;
        }
        var failure = send.Exception?.InnerException;
        error = failure switch
        {
            SocketException se => se.SocketErrorCode,
            null or OperationCanceledException or ObjectDisposedException => SocketError.OperationAborted, // null: cancelled
            _ => SocketError.SocketError,
        };
        if (failure is not (null or SocketException or OperationCanceledException or ObjectDisposedException))
            ExceptionDispatchInfo.Throw(failure!);
        return 0;
    }
}
