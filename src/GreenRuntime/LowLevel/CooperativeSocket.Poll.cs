// Socket.Poll and Socket.Select on a greenlet: readiness waited for on the hub's reactor.
//
// Design: the original with a zero timeout is the question ("is it ready?"), asked first and again after every wake;
// between the questions the greenlet parks on the reactor for every socket and direction concerned at once, so it is
// woken by the edge that makes one of them ready, not by a clock. The reactor is edge-triggered, and a zero-timeout
// poll that said no leaves nothing unseen: the next change of state is an edge. A socket in a Select error list is
// waited for as readable (epoll reports errors and hang-ups to both directions); a wake that the question then denies
// (data arrived on a socket asked about errors only) parks again. SelectError alone in Poll, and every case where the
// reactor cannot watch a socket (no reactor on this platform, a closed handle, a descriptor epoll refuses), asks the
// question at growing intervals instead (Parking.PollUntil: 1 ms doubling to 20 ms).
//
// Rejected: that interval for everything. Libraries that wait for messages in Poll (NetMQ's signaler, whose every
// receive waits there) noticed each message 1-20 ms late: request/reply round trips took twice as long as on threads,
// and fifty idle receivers cost CPU in their wake-ups.

using System.Collections;
using System.Net.Sockets;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

public static partial class CooperativeSocket
{
    /// <summary>
    /// <see cref="Socket.Poll(int, SelectMode)"/> that parks only the calling greenlet: whether
    /// <paramref name="socket"/> is readable, writable or in error (as the original answers) within the timeout.
    /// </summary>
    /// <param name="socket">The socket.</param>
    /// <param name="microSeconds">As for the original: how long to wait; -1 for ever; 0 asks without waiting.</param>
    /// <param name="mode">What to wait for.</param>
    /// <returns>The original's answer once it is yes, or when the timeout passed.</returns>
    /// <exception cref="ObjectDisposedException">The socket was disposed (as the original).</exception>
    public static bool Poll(Socket socket, int microSeconds, SelectMode mode)
    {
        ArgumentNullException.ThrowIfNull(socket);
        var hub = RequireHub();
        bool Ready()
        {
            using (Parking.SuppressCooperation())
                return socket.Poll(0, mode);
        }
        if (microSeconds == 0) return Ready();
        if (Ready()) return true;
        var timeout = microSeconds < 0 ? (TimeSpan?)null : TimeSpan.FromMicroseconds(microSeconds);
        if (mode != SelectMode.SelectError && SocketIo.WaitUntilReady(hub, [(socket, mode == SelectMode.SelectWrite)], timeout, Ready) is { } answer)
            return answer;
        return Parking.PollUntil(Ready, timeout);
    }

    /// <summary>
    /// <see cref="Socket.Select(IList, IList, IList, int)"/> that parks only the calling greenlet: waits until one of the
    /// sockets is ready, then leaves in each list the sockets that are, as the original does (all three lists empty
    /// when the timeout passed).
    /// </summary>
    /// <param name="checkRead">Sockets to check for readability, or null.</param>
    /// <param name="checkWrite">Sockets to check for writability, or null.</param>
    /// <param name="checkError">Sockets to check for errors, or null.</param>
    /// <param name="microSeconds">As for the original: how long to wait; -1 for ever; 0 asks without waiting.</param>
    /// <exception cref="ArgumentNullException">All three lists are null or empty (as the original).</exception>
    public static void Select(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds)
    {
        var hub = RequireHub();
        var read = Snapshot(checkRead);
        var write = Snapshot(checkWrite);
        var error = Snapshot(checkError);
        bool Ready()
        {
            Restore(checkRead, read);
            Restore(checkWrite, write);
            Restore(checkError, error);
            using (Parking.SuppressCooperation())
                Socket.Select(checkRead, checkWrite, checkError, 0); // also the original's argument checks
            return checkRead?.Count > 0 || checkWrite?.Count > 0 || checkError?.Count > 0;
        }
        // Each Ready() leaves the lists filtered by its zero-timeout select: empty after a timeout, as the original.
        if (Ready() || microSeconds == 0) return;
        var timeout = microSeconds < 0 ? (TimeSpan?)null : TimeSpan.FromMicroseconds(microSeconds);
        if (Watched(read, write, error) is { } watched && SocketIo.WaitUntilReady(hub, watched, timeout, Ready) is not null)
            return;
        Parking.PollUntil(Ready, timeout);
    }

    /// <summary>Every socket of the three lists with the direction to watch it for (errors: as readable), each once;
    /// null when a list holds something else than a Socket.</summary>
    private static (Socket Socket, bool Write)[]? Watched(object[]? read, object[]? write, object[]? error)
    {
        var watched = new List<(Socket, bool)>();
        foreach (var (items, forWrite) in new[] { (read, false), (write, true), (error, false) })
        {
            if (items is null) continue;
            foreach (var item in items)
            {
                if (item is not Socket s) return null;
                if (!watched.Contains((s, forWrite))) watched.Add((s, forWrite));
            }
        }
        return watched.ToArray();
    }

    private static object[]? Snapshot(IList? list)
    {
        if (list is null) return null;
        var copy = new object[list.Count];
        list.CopyTo(copy, 0);
        return copy;
    }

    private static void Restore(IList? list, object[]? items)
    {
        if (list is null || items is null) return;
        list.Clear();
        foreach (var item in items) list.Add(item);
    }
}
