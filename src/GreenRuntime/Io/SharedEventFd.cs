namespace GreenRuntime.Io;

/// <summary>
/// An eventfd that threads other than its owner write: a hub's reactor owns it, and any thread's post to the hub's
/// inbox writes it to end the hub's sleep in epoll_wait (Scheduling/Parker.cs). The descriptor is closed only once the
/// owner has let it go (<see cref="Dispose"/>) and no writer holds it (<see cref="TryAddRef"/> .. <see cref="Release"/>),
/// by whichever of them comes last.
/// </summary>
/// <remarks>
/// Invariant: the number is written only between a successful <see cref="TryAddRef"/> and its <see cref="Release"/>,
/// and it is closed exactly once, when the count of those writers is zero and the owner has disposed it. A writer that
/// read the number and was preempted before its write while the hub closed used to write 8 bytes into whatever the
/// process opened meanwhile under the same number (the kernel hands out the lowest free one): a file, a socket, a pipe.
/// The closer never waits for a writer: the last one closes the descriptor on its own thread, a few microseconds late.
/// </remarks>
internal sealed class SharedEventFd
{
    private const int Disposed = 1, OneWriter = 2;

    /// <summary>Writers holding the descriptor, times two, plus <see cref="Disposed"/> once the owner let it go.</summary>
    private int _state;

    public SharedEventFd(int fd) => Fd = fd;

    /// <summary>The descriptor: write it only between <see cref="TryAddRef"/> and <see cref="Release"/> (or as its owner, before
    /// <see cref="Dispose"/>).</summary>
    public int Fd { get; }

    /// <summary>Keeps the descriptor open until the matching <see cref="Release"/>; false (nothing held) once it is disposed.</summary>
    public bool TryAddRef()
    {
        int state = Volatile.Read(ref _state);
        // A compare-exchange, not an add: an add that found it disposed would have to give its count back, and two such
        // give-backs could each see the count fall to zero and close the number twice (the second time someone else's).
        while ((state & Disposed) == 0)
        {
            int seen = Interlocked.CompareExchange(ref _state, state + OneWriter, state);
            if (seen == state) return true;
            state = seen;
        }
        return false;
    }

    /// <summary>Ends a <see cref="TryAddRef"/>; the last writer of a disposed descriptor closes it.</summary>
    public void Release()
    {
        if (Interlocked.Add(ref _state, -OneWriter) == Disposed) Epoll.Close(Fd);
    }

    /// <summary>The owner lets the descriptor go: closed now, or by the last writer still holding it. Owner only, once.</summary>
    public void Dispose()
    {
        if (Interlocked.Or(ref _state, Disposed) == 0) Epoll.Close(Fd);
    }

    /// <summary>Whether the descriptor is still open (tests).</summary>
    internal bool IsOpen => Volatile.Read(ref _state) != Disposed;

    /// <summary>For messages: the descriptor's number.</summary>
    public override string ToString() => Fd.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
