// A connection's socket with the servers' error model, over the core's one cooperative socket layer.
//
// On a greenlet every receive and send is GreenRuntime.LowLevel.CooperativeSocket: the non-blocking system call
// parked on the hub's reactor (Linux x64), elsewhere .NET's async socket operations; a kill or a timeout leaves
// nothing running that could still write into the caller's buffer, so pooled buffers always go back to the pool.
// What this class adds is the servers' way of reporting: a TimeoutException for an I/O timeout, a SocketException
// for a failed connection, and ordinary blocking calls with socket timeouts off a hub (or inside a hub callback).

using System.Net.Sockets;

namespace GreenRuntime.Servers;

/// <summary>
/// One connection's cooperative receives and sends: they park only the calling greenlet; off a hub (or inside a hub
/// callback) they are ordinary blocking calls. Not thread-safe: one greenlet uses it at a time.
/// </summary>
internal sealed class ConnectionSocket(Socket socket)
{
    public Socket Socket { get; } = socket;

    /// <summary>Receives at most <paramref name="buffer"/>.Length bytes; 0 means the peer closed its side.</summary>
    /// <exception cref="TimeoutException">Nothing arrived within <paramref name="timeout"/>.</exception>
    /// <exception cref="SocketException">The connection failed.</exception>
    public int Receive(Span<byte> buffer, TimeSpan? timeout)
    {
        if (Parking.ParkingHubSilent() is null)
            return ReceiveBlocking(buffer, timeout);
        int n = CooperativeSocket.Receive(Socket, buffer, SocketFlags.None, timeout, out var error);
        return error switch
        {
            SocketError.Success => n,
            SocketError.TimedOut => throw new TimeoutException($"Nothing arrived within {timeout}."),
            _ => throw new SocketException((int)error),
        };
    }

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    /// <exception cref="TimeoutException">The peer did not take the data within <paramref name="timeout"/>.</exception>
    /// <exception cref="SocketException">The connection failed.</exception>
    public void Send(ReadOnlySpan<byte> data, TimeSpan? timeout)
    {
        if (Parking.ParkingHubSilent() is null)
        {
            SendBlocking(data, timeout);
            return;
        }
        CooperativeSocket.Send(Socket, data, SocketFlags.None, timeout, out var error);
        if (error == SocketError.TimedOut) throw new TimeoutException($"The peer did not take the data within {timeout}.");
        if (error != SocketError.Success) throw new SocketException((int)error);
    }

    private int ReceiveBlocking(Span<byte> buffer, TimeSpan? timeout)
    {
        Socket.ReceiveTimeout = ToMilliseconds(timeout);
        try
        {
            return Socket.Receive(buffer, SocketFlags.None);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new TimeoutException($"The socket receive did not complete within {timeout}.", e);
        }
    }

    private void SendBlocking(ReadOnlySpan<byte> data, TimeSpan? timeout)
    {
        Socket.SendTimeout = ToMilliseconds(timeout);
        try
        {
            while (!data.IsEmpty) data = data[Socket.Send(data, SocketFlags.None)..];
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new TimeoutException($"The socket send did not complete within {timeout}.", e);
        }
    }

    private static int ToMilliseconds(TimeSpan? timeout) =>
        timeout is { } t && t != Timeout.InfiniteTimeSpan ? (int)Math.Clamp(Math.Ceiling(t.TotalMilliseconds), 1, int.MaxValue) : 0;
}
