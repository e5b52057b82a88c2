// One hub's share of a StreamServer: its listening socket, its accept loop and the connections it accepted.
//
// A server on one hub has one acceptor; a server on a HubGroup has one per hub, each with a listener of its own
// (SO_REUSEPORT, see Listeners.cs). Everything here except the members marked "any thread" runs on the acceptor's
// hub, so a connection's whole life — accept, handler, close, freeing its slot — stays on one hub and its greenlets
// never race. The slots (MaxConnections) are counted by the server across all its acceptors.
//
// Accepting on the hub's reactor (Linux x64), not on .NET's socket engine:
//   1. The listener is put in non-blocking mode once. A poll(0) says whether a connection is queued; if so, the
//      non-blocking accept takes it (a connection reset in between is skipped, not an error).
//   2. Nothing queued: the accept loop waits on the hub's epoll set until the listener is readable (edge-triggered,
//      so every new connection after the poll is an edge the wait sees), then goes back to 1.
// The accept loop takes every queued connection before it waits again, so one wake serves a whole burst.
// Where the hub has no reactor, the accept is .NET's AcceptAsync with the greenlet parked (CooperativeSocket.Accept).
//
// Rejected: accept(2) until EAGAIN (.NET reports EAGAIN as an exception: one per burst, ten times the cost of the
// poll); AcceptAsync everywhere (a socket-engine thread and an inbox hop per connection).

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Servers;

/// <summary>One hub's listener, accept loop and connections; see the header comment.</summary>
/// <remarks>Invariant: <see cref="Count"/> equals the number of this hub's live connections (the set's size), checked
/// by <see cref="AssertCount"/> where it changes.</remarks>
internal sealed class HubAcceptor(StreamServer server, Hub hub, Socket listener, int index)
{
    private readonly HashSet<StreamServer.Connection> _connections = new();
    private readonly object _slotLock = new();
    private ParkToken _slotWaiter;
    private bool _hasSlotWaiter;
    private int _count;

    public StreamServer Server { get; } = server;
    public Hub Hub { get; } = hub;
    public Socket Listener { get; } = listener;
    public int Index { get; } = index;

    /// <summary>The accept loop's greenlet, null while not accepting. Written under the server's lock.</summary>
    public Greenlet? Loop { get; set; }

    /// <summary>Cancels the loop's pending wait when it is stopped. Written under the server's lock.</summary>
    public CancellationTokenSource? Cancel { get; set; }

    /// <summary>Live connections of this hub. Any thread (a snapshot).</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Connections accepted by this hub since the server started. Any thread (a snapshot).</summary>
    public long Accepted => Volatile.Read(ref _accepted);
    private long _accepted;

    // ---- accept loop (on the hub) ---------------------------------------------------------------------------

    /// <summary>The accept loop: wait for a slot; accept; take the slot and spawn the connection; repeat.</summary>
    public void Run(CancellationToken cancel)
    {
        bool reactor = CooperativeSocket.HasReactor;
        if (reactor) Listener.Blocking = false; // step 1: accept(2) never waits; readiness comes from the reactor
        int backoffMs = 5;
        while (true)
        {
            WaitWhileFull();
            Socket socket;
            try
            {
                socket = reactor ? AcceptOnReactor(cancel) : CooperativeSocket.Accept(Listener, cancel);
                backoffMs = 5;
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException || Server.IsStopping || cancel.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of file descriptors and the like: keep serving the connections we have and retry.
                ServerLog.AcceptFailed(Server.Logger, e, Server.LocalEndPoint.ToString()!, e.SocketErrorCode.ToString(), backoffMs);
                Green.Sleep(backoffMs);
                backoffMs = Math.Min(backoffMs * 2, 1000);
                continue;
            }
            // Another hub may have taken the last slot since the check above: the accepted client waits here, as it
            // would have in the backlog.
            while (!Server.TryTakeSlot()) WaitForSlot();
            Interlocked.Increment(ref _accepted);
            Spawn(socket);
        }
    }

    /// <summary>Steps 1–2 of the header comment: the next queued connection, waiting on the reactor while there is none.</summary>
    private Socket AcceptOnReactor(CancellationToken cancel)
    {
        while (true)
        {
            using (Parking.SuppressCooperation()) // the listener's own calls, never their patched forms
            {
                while (Listener.Poll(0, SelectMode.SelectRead))
                {
                    try
                    {
                        return AcceptedBlocking(Listener.Accept());
                    }
                    catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.ConnectionAborted or SocketError.ConnectionReset)
                    {
                        // The client gave up between the poll and the accept.
                    }
                }
            }
            var ready = CooperativeSocket.WaitReadableAsync(Listener, null, cancel);
            if (!ready.IsCompleted) Parking.WaitForTask(ready, null, WaitReason.Socket);
            if (ready.IsCanceled) throw new OperationCanceledException(cancel);
            if (ready.IsFaulted)
            {
                // A wait of the previous accept loop (stopped, then restarted at once) is still being cancelled: its
                // cancellation is queued on this hub, so let it run and wait again.
                if (ready.Exception!.InnerException is InvalidOperationException) Green.Sleep(1);
                else ready.GetAwaiter().GetResult();
                continue;
            }
            if (ready.Result == SocketError.OperationAborted) throw new ObjectDisposedException(nameof(Socket), "The listener was closed.");
        }
    }

    /// <summary>An accepted socket inherits the listener's non-blocking mode in .NET; handlers expect an ordinary socket.</summary>
    private static Socket AcceptedBlocking(Socket socket)
    {
        if (!socket.Blocking) socket.Blocking = true;
        return socket;
    }

    private void WaitWhileFull()
    {
        while (Server.IsFull)
        {
            Server.OnFullHook(Hub);
            if (!Server.IsFull) break;
            if (Server.Pool is { } pool) pool.WaitAvailable();
            else WaitForSlot();
        }
    }

    /// <summary>Parks until a slot may be free (a connection of any hub ended); the caller checks again.</summary>
    private void WaitForSlot()
    {
        var token = Parking.BeginPark(WaitReason.Other, foreignWake: Server.Hubs != null);
        lock (_slotLock)
        {
            _slotWaiter = token;
            _hasSlotWaiter = true;
        }
        // A connection that ended on another hub between the caller's check and the store above found no waiter:
        // look again now that the waiter is visible (the fence orders the store before the read).
        Interlocked.MemoryBarrier();
        if (!Server.IsFull) token.TryWake();
        try
        {
            Parking.EndPark(token);
        }
        finally
        {
            lock (_slotLock) _hasSlotWaiter = false;
        }
    }

    /// <summary>Wakes the accept loop if it waits for a slot. Any thread.</summary>
    public void WakeSlotWaiter()
    {
        ParkToken token;
        lock (_slotLock)
        {
            if (!_hasSlotWaiter) return;
            token = _slotWaiter;
        }
        if (Parking.CurrentHub == Hub) token.TryWake(); // on its hub: a greenlet, a link or a callback
        else token.PostWake(); // through its hub's inbox; dropped there if that park already ended
    }

    // ---- connections (on the hub) ---------------------------------------------------------------------------

    private void Spawn(Socket socket)
    {
        EndPoint remote;
        try
        {
            Server.ConfigureAccepted?.Invoke(socket);
            remote = socket.RemoteEndPoint!;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            socket.Dispose(); // the client is already gone
            Server.ReleaseSlot();
            return;
        }
        var connection = new StreamServer.Connection(Server, socket, remote);
        var g = Server.CreateConnectionGreenlet(connection);
        connection.Greenlet = g;
        _connections.Add(connection);
        Interlocked.Increment(ref _count);
        AssertCount();
        g.RawLink(_ => Ended(connection)); // on the hub, however the greenlet ends (even unstarted)
        try
        {
            Server.Pool?.Add(g); // a free slot was seen just before accepting; if another user of the pool took it, wait here
        }
        catch
        {
            g.Kill(block: false); // never started: its link still runs and closes the socket
            throw;
        }
        g.Start();
    }

    private void Ended(StreamServer.Connection connection)
    {
        connection.Socket.Dispose();
        if (!_connections.Remove(connection)) return;
        Interlocked.Decrement(ref _count);
        AssertCount();
        Server.ReleaseSlot();
    }

    /// <summary>
    /// The hub's part of Stop: waits up to <paramref name="timeout"/> for its connections (all but
    /// <paramref name="exclude"/>, the greenlet that called Stop), then kills the rest and closes their sockets.
    /// </summary>
    /// <returns>How many were killed.</returns>
    public int Drain(TimeSpan timeout, Greenlet? exclude)
    {
        Debug.Assert(Parking.CurrentHub == Hub, "An acceptor's connections are drained on its own hub.");
        var running = _connections.Where(c => c.Greenlet != exclude).ToList();
        if (running.Count > 0 && Parking.CanPark)
            Green.JoinAll(running.Select(c => c.Greenlet), timeout);
        var left = running.Where(c => !c.Greenlet.Dead).ToList();
        if (left.Count > 0)
        {
            Green.KillAll(left.Select(c => c.Greenlet), block: false);
            foreach (var c in left) c.Socket.Dispose(); // also ends calls that are not cooperative
            if (Parking.CanPark) Green.JoinAll(left.Select(c => c.Greenlet), TimeSpan.FromSeconds(1));
        }
        return left.Count;
    }

    [Conditional("DEBUG")]
    private void AssertCount()
    {
        if (_count != _connections.Count)
            throw new InvalidOperationException($"Internal error: hub {Index} of {Server} counts {_count} connections but holds {_connections.Count} (the count must change with the set).");
    }
}
