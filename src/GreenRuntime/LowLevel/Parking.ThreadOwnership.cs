using GreenRuntime.Scheduling;

namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// Says that the calling thread may now own something that only its exit gives up, such as a
    /// <see cref="System.Threading.Mutex"/> (the OS abandons a mutex whose owning thread ends, and nothing else frees it):
    /// when the thread is a pooled carrier, it ends once the greenlet body (or stackless step) it runs is over, instead of
    /// going back to the pool. Any thread; on a thread that is no pooled carrier (a hub's own thread, a user's thread) it
    /// does nothing. One thread-static read and a store.
    /// </summary>
    /// <remarks>
    /// <para>A greenlet's body runs on a pooled thread, so without this a mutex the body still held when it ended
    /// (returned, threw, or was killed) stayed owned by that thread: other waiters never got the
    /// <see cref="System.Threading.AbandonedMutexException"/> a thread's exit gives them (another process's
    /// <c>WaitOne(1000)</c> on a named mutex timed out), and the next greenlet on that thread acquired it again
    /// recursively, as if it were the owner. A carrier that ends is replaced by a pooled one at once (a hand-off), so the
    /// cost is a thread's creation and exit per such body, paid by the pool's refill thread. Call it before a wait that may
    /// acquire (conservatively: it need not have succeeded), on the thread that waits, when what is given back cannot be
    /// counted; otherwise count with <see cref="NoteThreadAcquired"/> and <see cref="NoteThreadReleased"/>, which retire
    /// the carrier only when the body still owns something at its end.</para>
    /// </remarks>
    public static void RetireCarrierAfterBody()
    {
        if (Carrier.CurrentOrNull is { IsPooled: true } carrier) carrier.RetireAfterBody = true;
    }

    /// <summary>
    /// Counts <paramref name="count"/> acquisitions the calling thread has just made of something only its exit gives up
    /// (a <see cref="System.Threading.Mutex"/> a wait acquired, also when it reported the mutex abandoned; one per mutex
    /// for a <c>WaitAll</c>): when the thread is a pooled carrier and the acquisitions are not all given back
    /// (<see cref="NoteThreadReleased"/>) by the time the greenlet body (or stackless step) it runs is over, it ends then,
    /// as for <see cref="RetireCarrierAfterBody"/>. Any thread; elsewhere it does nothing. One thread-static read and an
    /// add.
    /// </summary>
    /// <param name="count">Acquisitions made, one per recursive acquisition of the same mutex.</param>
    public static void NoteThreadAcquired(int count)
    {
        if (count > 0 && Carrier.CurrentOrNull is { IsPooled: true } carrier) carrier.OwnedUntilExit += count;
    }

    /// <summary>
    /// Counts one acquisition the calling thread has given back (a successful <c>Mutex.ReleaseMutex</c>), against
    /// <see cref="NoteThreadAcquired"/>. A release of what was never counted (a mutex created already owned) does not
    /// go below zero. Any thread; elsewhere than on a pooled carrier it does nothing.
    /// </summary>
    public static void NoteThreadReleased()
    {
        if (Carrier.CurrentOrNull is { IsPooled: true, OwnedUntilExit: > 0 } carrier) carrier.OwnedUntilExit--;
    }
}
