// Cooperative socket I/O for the servers, built only on the core's Task bridge (Hub.WaitForTask).
//
// Glossary: an *operation* is one Accept/Receive/Send started with the socket's async API; it *parks* the
// greenlet when it does not complete at once; it is *abandoned* when the park ends without it (timeout, kill).
//
// Design: on Linux x64 a receive or send is the non-blocking system call, and the greenlet parks on the hub's
// reactor while the kernel says EAGAIN (Io/SocketIo.cs): nothing is left running after a timeout or a kill, so
// the buffers stay the caller's. Elsewhere (and if the reactor is unavailable): start the .NET async operation. On Linux the socket engine first tries the syscall on the calling
// thread, so an operation whose data is already there returns a completed ValueTask and no park happens (the
// fast path). Otherwise the greenlet parks in hub.WaitForTask until the completion is posted to the hub inbox.
//
// Protocol for an abandoned operation (the park ended, the operation did not):
//   1. cancel it through the connection's CancellationTokenSource (the socket stays usable), and drop the
//      source: a cancelled source cannot be reused;
//   2. mark the socket Tainted: a receive that raced the cancel may still write into the caller's buffer, so
//      the owner must not give that buffer back to a pool;
//   3. for an accept, dispose the socket it may still produce.
//
// Rejected: Poll(0) before each call (one extra syscall on every operation, and the async engine already
// tries synchronously first); a CancellationTokenSource per operation (an allocation on the fast path);
// disposing the socket on every timeout (a kill of one handler would then break a socket someone else owns).

using System.Net.Sockets;
using GreenRuntime.Io;

namespace GreenRuntime.Servers;

/// <summary>
/// One socket's cooperative operations: they park only the calling greenlet; off a hub (or inside a hub
/// callback) they are ordinary blocking calls. Not thread-safe: one greenlet uses it at a time.
/// </summary>
internal sealed class CooperativeSocket
{
    private CancellationTokenSource? _cts;

    public CooperativeSocket(Socket socket) => Socket = socket;

    public Socket Socket { get; }

    /// <summary>An operation was abandoned: buffers it used may still be written by the kernel copy.</summary>
    public bool Tainted { get; private set; }

    /// <summary>Receives at most <paramref name="buffer"/>.Length bytes; 0 means the peer closed its side.</summary>
    /// <exception cref="TimeoutException">Nothing arrived within <paramref name="timeout"/> (the receive was cancelled).</exception>
    /// <exception cref="SocketException">The connection failed.</exception>
    public int Receive(Memory<byte> buffer, TimeSpan? timeout)
    {
        var hub = Hub.CurrentOrNull;
        if (hub == null || !hub.CanBlockHere)
            return ReceiveBlocking(buffer, timeout);
        if (SocketIo.TryReceive(hub, Socket, buffer.Span, SocketFlags.None, timeout, out int received, out var error))
            return error switch
            {
                SocketError.Success => received,
                SocketError.TimedOut => throw new TimeoutException($"Nothing arrived within {timeout}."),
                _ => throw new SocketException((int)error),
            };
        var vt = Socket.ReceiveAsync(buffer, SocketFlags.None, Token());
        if (vt.IsCompleted) return vt.GetAwaiter().GetResult();
        var task = vt.AsTask();
        Park(hub, task, timeout);
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    /// <exception cref="TimeoutException">The peer did not take the data within <paramref name="timeout"/> (per send call).</exception>
    public void Send(ReadOnlyMemory<byte> data, TimeSpan? timeout)
    {
        var hub = Hub.CurrentOrNull;
        if (hub == null || !hub.CanBlockHere)
        {
            SendBlocking(data, timeout);
            return;
        }
        if (SocketIo.TrySend(hub, Socket, data.Span, SocketFlags.None, timeout, out _, out var error))
        {
            if (error == SocketError.TimedOut) throw new TimeoutException($"The peer did not take the data within {timeout}.");
            if (error != SocketError.Success) throw new SocketException((int)error);
            return;
        }
        while (!data.IsEmpty)
        {
            var vt = Socket.SendAsync(data, SocketFlags.None, Token());
            int sent;
            if (vt.IsCompleted)
            {
                sent = vt.GetAwaiter().GetResult();
            }
            else
            {
                var task = vt.AsTask();
                Park(hub, task, timeout);
                sent = task.GetAwaiter().GetResult();
            }
            data = data[sent..];
        }
    }

    /// <summary>Accepts one connection on <paramref name="listener"/>, parking the current greenlet meanwhile. Hub-only.</summary>
    public static Socket Accept(Hub hub, Socket listener, CancellationToken cancel)
    {
        var vt = listener.AcceptAsync(cancel);
        if (vt.IsCompleted) return vt.GetAwaiter().GetResult();
        var task = vt.AsTask();
        bool done = false;
        try
        {
            hub.WaitForTask(task, null, WaitReason.Socket);
            done = true;
        }
        finally
        {
            // Killed while accepting: whatever the pending accept still produces belongs to nobody.
            if (!done)
                task.ContinueWith(static t => { if (t.IsCompletedSuccessfully) t.Result.Dispose(); }, CancellationToken.None,
                    TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        return task.GetAwaiter().GetResult();
    }

    private void Park(Hub hub, Task task, TimeSpan? timeout)
    {
        bool finished = false;
        try
        {
            hub.WaitForTask(task, timeout, WaitReason.Socket);
            finished = task.IsCompleted;
        }
        finally
        {
            if (!finished) Abandon();
        }
        if (!finished)
            throw new TimeoutException($"The socket operation did not complete within {timeout}.");
    }

    private void Abandon()
    {
        Tainted = true;
        var cts = _cts;
        _cts = null;
        try
        {
            cts?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The socket was disposed meanwhile; its operations are already aborted.
        }
    }

    private CancellationToken Token() => (_cts ??= new CancellationTokenSource()).Token;

    private int ReceiveBlocking(Memory<byte> buffer, TimeSpan? timeout)
    {
        Socket.ReceiveTimeout = ToMilliseconds(timeout);
        try
        {
            return Socket.Receive(buffer.Span, SocketFlags.None);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new TimeoutException($"The socket receive did not complete within {timeout}.", e);
        }
    }

    private void SendBlocking(ReadOnlyMemory<byte> data, TimeSpan? timeout)
    {
        Socket.SendTimeout = ToMilliseconds(timeout);
        try
        {
            while (!data.IsEmpty) data = data[Socket.Send(data.Span, SocketFlags.None)..];
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new TimeoutException($"The socket send did not complete within {timeout}.", e);
        }
    }

    private static int ToMilliseconds(TimeSpan? timeout) =>
        timeout is { } t && t != Timeout.InfiniteTimeSpan ? (int)Math.Clamp(Math.Ceiling(t.TotalMilliseconds), 1, int.MaxValue) : 0;

    /// <summary>Releases the cancellation source (the socket itself belongs to the caller).</summary>
    public void Release()
    {
        _cts?.Dispose();
        _cts = null;
    }
}
