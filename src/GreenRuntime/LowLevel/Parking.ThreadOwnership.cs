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
    /// acquire (conservatively: it need not have succeeded), on the thread that waits.</para>
    /// </remarks>
    public static void RetireCarrierAfterBody()
    {
        if (Carrier.CurrentOrNull is { IsPooled: true } carrier) carrier.RetireAfterBody = true;
    }
}
