using System.Runtime.InteropServices;

namespace GreenRuntime.Scheduling;

/// <summary>
/// A one-permit parking spot for exactly one OS thread: <see cref="Park()"/> blocks until a permit is
/// available and consumes it; <see cref="Unpark"/> makes the permit available (idempotent) and wakes the
/// sleeper if there is one.
/// </summary>
/// <remarks>
/// Every baton hand-off in the runtime is one <see cref="Unpark"/> of the receiver followed by one
/// <see cref="Park()"/> of the giver, so this is the hot path of a stackful switch. On Linux it is a raw
/// futex on a tri-state word in native memory (~3 µs per hand-off measured here, and unlike
/// SemaphoreSlim/ManualResetEventSlim it stays flat with thousands of parked threads because it never
/// spins). Elsewhere it falls back to <see cref="AutoResetEvent"/>, whose auto-reset permit has the same
/// semantics.
/// The word is: <c>0</c> no permit, nobody asleep; <c>1</c> permit available; <c>-1</c> the owner is
/// asleep (or about to sleep) in the kernel, so an unpark must issue a futex wake; <c>2</c> the owner was woken
/// without a permit (<see cref="Nudge"/>) and is on its way to watch for one, so an unpark needs no wake.
/// </remarks>
internal sealed unsafe class Parker : IDisposable
{
    private const int NoPermit = 0, Permit = 1, Sleeping = -1, Nudged = 2;
    private const int SysFutex = 202, FutexWaitPrivate = 128, FutexWakePrivate = 129;

    private static readonly bool s_useFutex = OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    private int* _word;
    private readonly AutoResetEvent? _fallback;

    // When the owner sleeps in epoll instead of on the futex (the hub's reactor), an unpark that finds it
    // asleep writes this eventfd, which is in the epoll set. Null: wake through the futex.
    // Invariant: an unpark writes it only while holding a reference (SharedEventFd.TryAddRef): the owner may detach
    // and close it at any moment (its hub closes), and a number read here and written after the close would land in
    // whatever the process opened next under it.
    private volatile Io.SharedEventFd? _eventFd;

    /// <summary>Runs in <see cref="Unpark"/> between taking the eventfd and writing it (tests: holds a post there while the
    /// owner closes).</summary>
    internal Action? BeforeEventFdWrite;

    public Parker()
    {
        if (s_useFutex)
        {
            _word = (int*)NativeMemory.AlignedAlloc(64, 64); // own cache line: parkers are hammered by two threads
            *_word = NoPermit;
        }
        else
        {
            _fallback = new AutoResetEvent(false);
        }
    }

    /// <summary>Blocks until a permit is available, then consumes it.</summary>
    public void Park() => Park(-1);

    /// <summary>Blocks until a permit is available or the timeout (in nanoseconds, negative = infinite) elapses.</summary>
    /// <returns>true when a permit was consumed.</returns>
    public bool Park(long timeoutNs)
    {
        if (_fallback != null)
            return _fallback.WaitOne(timeoutNs < 0 ? Timeout.Infinite : (int)Math.Min(int.MaxValue, (timeoutNs + 999_999) / 1_000_000));

        long deadline = timeoutNs < 0 ? long.MaxValue : NowNs() + timeoutNs;
        while (true)
        {
            switch (PrepareToSleep())
            {
                case Permit: return true;
                case Nudged: continue; // this park does not watch: sleep again
            }
            if (timeoutNs < 0)
            {
                FutexWait(_word, Sleeping, null);
            }
            else
            {
                long left = deadline - NowNs();
                if (left <= 0)
                {
                    // Withdraw the sleeping mark; a permit may have raced in, which we then take.
                    return Interlocked.Exchange(ref *_word, NoPermit) == Permit;
                }
                var ts = new Timespec { Seconds = left / 1_000_000_000, Nanoseconds = left % 1_000_000_000 };
                FutexWait(_word, Sleeping, &ts);
            }
        }
    }

    /// <summary>
    /// One step of every park (futex word only): takes a permit that is there (<c>Permit</c>), consumes a nudge
    /// (<c>Nudged</c>), or marks the owner asleep, committed to sleeping next (<c>Sleeping</c>).
    /// </summary>
    private int PrepareToSleep()
    {
        while (true)
        {
            if (Interlocked.CompareExchange(ref *_word, NoPermit, Permit) == Permit)
                return Permit;
            int word = Interlocked.CompareExchange(ref *_word, Sleeping, NoPermit);
            if (word is NoPermit or Sleeping)
                return Sleeping;
            if (word == Nudged && Interlocked.CompareExchange(ref *_word, NoPermit, Nudged) == Nudged)
                return Nudged;
            // a permit arrived between the exchanges (or overwrote the nudge): take it
        }
    }

    /// <summary>
    /// Watches for a permit for up to <paramref name="spinTicks"/> (Stopwatch ticks) without taking it: a permit that
    /// arrives meanwhile costs no system call on either side (<see cref="Unpark"/> sees no sleeper, so it issues no
    /// wake), and the park that follows takes it at once. Then clears <paramref name="spinnerSlot"/> if it still holds
    /// <paramref name="spinnerId"/>.
    /// </summary>
    /// <returns>true when the permit came while it watched.</returns>
    public bool Watch(long spinTicks, ref int spinnerSlot, int spinnerId)
    {
        bool seen = false;
        if (_fallback == null && spinTicks > 0)
        {
            long until = System.Diagnostics.Stopwatch.GetTimestamp() + spinTicks;
            do
            {
                for (int i = 0; i < 16 && !seen; i++)
                {
                    seen = Volatile.Read(ref *_word) == Permit;
                    if (!seen) Thread.SpinWait(4);
                }
            }
            while (!seen && System.Diagnostics.Stopwatch.GetTimestamp() < until);
        }
        Interlocked.CompareExchange(ref spinnerSlot, 0, spinnerId);
        return seen;
    }

    /// <summary>
    /// Blocks until a permit is available, like <see cref="Park()"/>; but each time a <see cref="Nudge"/> wakes it,
    /// it takes <paramref name="spinnerSlot"/> (when free) for <paramref name="spinnerId"/> and watches for the permit
    /// (<see cref="Watch"/>) before sleeping again.
    /// </summary>
    /// <param name="spinTicks">How long one watch lasts (Stopwatch ticks).</param>
    /// <param name="spinnerSlot">The hub's one spinner slot.</param>
    /// <param name="spinnerId">This carrier's id, for the slot.</param>
    /// <param name="missed">Watches that ended without the permit.</param>
    /// <returns>true when a nudge made it watch and the permit came while it watched.</returns>
    public bool ParkWatchingWhenNudged(long spinTicks, ref int spinnerSlot, int spinnerId, out int missed)
    {
        missed = 0;
        if (_fallback != null)
        {
            _fallback.WaitOne();
            return false;
        }
        bool caught = false;
        while (true)
        {
            switch (PrepareToSleep())
            {
                case Permit:
                    return caught;
                case Nudged:
                    // At most one carrier of a hub spins: when another does, sleep again at once.
                    if (Interlocked.CompareExchange(ref spinnerSlot, spinnerId, 0) != 0) continue;
                    if (Watch(spinTicks, ref spinnerSlot, spinnerId)) caught = true; // taken by the next step
                    else missed++;
                    continue;
            }
            FutexWait(_word, Sleeping, null);
        }
    }

    /// <summary>
    /// Wakes the owner without giving it a permit, when it sleeps on the futex: a permit expected soon then finds it
    /// watching (<see cref="ParkWatchingWhenNudged"/>) instead of asleep, and the wake's latency is paid ahead of the
    /// hand-off rather than in it. Safe from any thread; a park that does not watch sleeps again.
    /// </summary>
    /// <returns>true when the owner was asleep and has been woken.</returns>
    public bool Nudge()
    {
        if (_fallback != null || _eventFd != null) return false; // an external sleep (epoll) is woken only by a permit
        if (Interlocked.CompareExchange(ref *_word, Nudged, Sleeping) != Sleeping) return false;
        FutexWake(_word, 1);
        return true;
    }

    // Environment.TickCount64 is coarse (milliseconds, and CLOCK_MONOTONIC_COARSE on Linux): timer wake-ups need the fine clock.
    private static long NowNs() => (long)(System.Diagnostics.Stopwatch.GetTimestamp() * (1_000_000_000.0 / System.Diagnostics.Stopwatch.Frequency));

    /// <summary>Whether the owner is asleep (or committed to sleeping) in the kernel, so an unpark will have to wake it.</summary>
    public bool IsSleeping => _fallback == null && Volatile.Read(ref *_word) == Sleeping;

    /// <summary>Makes the permit available and wakes the owner if it sleeps. Safe from any thread.</summary>
    public void Unpark()
    {
        if (_fallback != null)
        {
            _fallback.Set();
            return;
        }
        int previous = Interlocked.Exchange(ref *_word, Permit);
        if (previous == Sleeping)
        {
            var eventFd = _eventFd;
            if (eventFd == null) FutexWake(_word, 1);
            else SignalEventFd(eventFd);
        }
        // Nudged: the nudge's futex wake is already on its way, and the owner takes the permit when it arrives.
    }

    // Out of line: only an owner asleep in epoll gets here, and the carriers' hand-offs never do.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void SignalEventFd(Io.SharedEventFd eventFd)
    {
        if (!eventFd.TryAddRef())
        {
            // Closed: the owner sleeps on the futex now, if at all (a hub sleeps there once its reactor is gone).
            FutexWake(_word, 1);
            return;
        }
        try
        {
            BeforeEventFdWrite?.Invoke();
            ulong one = 1;
            Write(eventFd.Fd, &one, sizeof(ulong)); // cannot block: the counter would have to reach 2^64-1
        }
        finally
        {
            eventFd.Release();
        }
    }

    /// <summary>
    /// From now on the owner sleeps elsewhere (<see cref="BeginExternalSleep"/>): unparks that find it asleep
    /// write <paramref name="eventFd"/> (null: back to the futex). Only the owner calls this, while awake. An unpark
    /// still under way may write the previous eventfd after this returns: it holds a reference, so that one closes only
    /// after it (<see cref="Io.SharedEventFd"/>).
    /// </summary>
    public void WakeThroughEventFd(Io.SharedEventFd? eventFd)
    {
        if (_fallback != null) throw new PlatformNotSupportedException("An external sleep needs the futex parker (Linux).");
        _eventFd = eventFd;
    }

    /// <summary>
    /// The owner is about to sleep in a wait of its own (epoll) that the eventfd given to
    /// <see cref="WakeThroughEventFd"/> interrupts. Returns false, consuming the permit, when one is already
    /// available: then the owner must not sleep.
    /// </summary>
    public bool BeginExternalSleep()
    {
        while (true)
        {
            switch (PrepareToSleep())
            {
                case Permit: return false;
                case Sleeping: return true;
            }
        }
    }

    /// <summary>Ends an external sleep: withdraws the sleeping mark; true when a permit arrived meanwhile (consumed).</summary>
    public bool EndExternalSleep() => Interlocked.Exchange(ref *_word, NoPermit) == Permit;

    public void Dispose()
    {
        _fallback?.Dispose();
        if (_word != null)
        {
            NativeMemory.AlignedFree(_word);
            _word = null;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    private static void FutexWait(int* word, int expected, Timespec* timeout) =>
        Syscall(SysFutex, word, FutexWaitPrivate, expected, timeout, null, 0);

    private static void FutexWake(int* word, int count) => SyscallNoTransition(SysFutex, word, FutexWakePrivate, count, null, null, 0);

    [DllImport("libc", EntryPoint = "write")]
    [System.Runtime.InteropServices.SuppressGCTransition]
    private static extern nint Write(int fd, void* buffer, nint count);

    // glibc's syscall() is an assembly shim that moves its integer arguments into the syscall registers, so
    // binding it with a fixed prototype is safe even though it is declared variadic.
    [DllImport("libc", EntryPoint = "syscall")]
    private static extern long Syscall(long number, int* word, int op, int value, Timespec* timeout, int* word2, int value3);

    // A wake never blocks, so it may skip the GC transition.
    [DllImport("libc", EntryPoint = "syscall")]
    [System.Runtime.InteropServices.SuppressGCTransition]
    private static extern long SyscallNoTransition(long number, int* word, int op, int value, Timespec* timeout, int* word2, int value3);
}
