using System.Runtime.InteropServices;
using GreenRuntime.Io;

namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// Parks the current greenlet on the hub's reactor until a read of <paramref name="handle"/>'s file descriptor may
    /// not block (trio's <c>wait_readable</c> for any descriptor the kernel can poll: a pipe, a FIFO, a terminal, a
    /// socket). Nothing is read, so a kill or timeout meanwhile leaves the data for the next reader.
    /// </summary>
    /// <param name="handle">An open descriptor. It is not referenced while the greenlet waits, so closing it meanwhile
    /// goes ahead; the wait then ends within about 250 ms (the reactor notices the close).</param>
    /// <param name="timeout">How long to wait; null or <see cref="Timeout.InfiniteTimeSpan"/>: no limit.</param>
    /// <returns>True when the descriptor may be readable, or was closed meanwhile: make the read (non-blocking, since
    /// another reader of the same descriptor may have taken the data; it reports a closed handle). False when
    /// <paramref name="timeout"/> passed first. Null, before any wait, when the reactor cannot watch the descriptor: no
    /// reactor on this platform, a closed or invalid handle, or a file the kernel does not poll (a regular file,
    /// <c>/dev/null</c>): wait another way.</returns>
    /// <remarks>Readiness is edge-triggered underneath: after a true, try the non-blocking call and wait again only when
    /// it says it would block; a spurious true is possible, a lost wake is not. A kill or an expired
    /// <see cref="GreenTimeout"/> is raised, as at every blocking point.</remarks>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static bool? WaitReadable(SafeHandle handle, TimeSpan? timeout = null) => WaitReady(handle, write: false, timeout);

    /// <summary>
    /// Parks the current greenlet on the hub's reactor until a write to <paramref name="handle"/>'s file descriptor may
    /// not block (buffer space in a pipe, a FIFO, a socket). The same contract as <see cref="WaitReadable"/>.
    /// </summary>
    /// <param name="handle">An open descriptor, not referenced while the greenlet waits.</param>
    /// <param name="timeout">How long to wait; null or <see cref="Timeout.InfiniteTimeSpan"/>: no limit.</param>
    /// <returns>True when the descriptor may be writable, or was closed meanwhile; false when the timeout passed first;
    /// null, before any wait, when the reactor cannot watch the descriptor.</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static bool? WaitWritable(SafeHandle handle, TimeSpan? timeout = null) => WaitReady(handle, write: true, timeout);

    private static bool? WaitReady(SafeHandle handle, bool write, TimeSpan? timeout)
    {
        ArgumentNullException.ThrowIfNull(handle);
        var hub = ParkingHubSilent() ?? throw new InvalidOperationException(
            "Parking.WaitReadable and WaitWritable park the calling greenlet: call them on a greenlet that may park (Parking.ParkingHub() is not null).");
        if (!Epoll.IsSupported || hub.Reactor is not { } reactor || handle.IsInvalid || handle.IsClosed) return null;
        // The number is read without a reference (see SocketIo's header): a close meanwhile is noticed by the reactor's
        // sweep, and the caller's next call on the handle reports it.
        int fd = (int)handle.DangerousGetHandle();
        return reactor.Wait(handle, fd, write, timeout, WaitReason.File) switch
        {
            null => null,
            Readiness.TimedOut => false,
            _ => true,
        };
    }
}
