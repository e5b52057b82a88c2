// A token source whose cancel is run once, by whoever claims it first, and whose end can be waited for; and the
// runtime's cancelling thread, which runs the cancels that hub code hands over.
//
// Why: a kill or a timeout's expiry is hub code, and a token cancelled there runs its callbacks there. The callbacks are
// foreign code's, and some take locks (SemaphoreSlim's, a Dataflow block's). Hub code cannot park, so a contended lock
// is waited for with the baton held; when a greenlet of the hub held that lock, neither could go on and the hub stopped
// for good. So the hub hands the cancel over: to the greenlet itself, which runs it on its own stack as it resumes with
// the kill or timeout (a lock there is a cooperative wait), or to the cancelling thread, where waiting for a lock is
// only waiting. Both may reach the same source; the gate (CancelQuietly) makes one of them run it, and a greenlet that
// must not unwind before a cancel begun elsewhere has ended waits for CancelEnded (KillLinkedSource.Settle).
// The sources: the tokens the runtime links to an operation (KillLinkedSource), and GreenTimeout.Token.

namespace GreenRuntime.LowLevel;

/// <summary>See the header of this file.</summary>
internal abstract class GatedCancellationSource : CancellationTokenSource
{
    private int _cancelState; // NotCancelled, Cancelling, Cancelled: whoever moves it from the first runs the cancel
    private TaskCompletionSource? _cancelEnded; // made by the first greenlet that waits for a begun cancel

    private const int NotCancelled = 0, Cancelling = 1, Cancelled = 2;

    /// <summary>Whether a cancel was claimed (running or over).</summary>
    internal bool CancelClaimed => Volatile.Read(ref _cancelState) != NotCancelled;

    /// <summary>The one way the source is cancelled: only the first caller cancels; a later one returns at once, even
    /// while the first one still runs the callbacks.</summary>
    internal void CancelQuietly()
    {
        if (Interlocked.CompareExchange(ref _cancelState, Cancelling, NotCancelled) != NotCancelled) return;
        try
        {
            Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The operation ended, and its caller disposed this, before the cancel came round.
        }
        catch (AggregateException e)
        {
            CallbacksFailed(e);
        }
        finally
        {
            // Both sides are full fences: a waiter that published its completion source after this read sees Cancelled.
            Interlocked.Exchange(ref _cancelState, Cancelled);
            Volatile.Read(ref _cancelEnded)?.TrySetResult();
        }
    }

    /// <summary>A callback threw while the source was cancelled. Any thread.</summary>
    protected virtual void CallbacksFailed(AggregateException e)
    {
        // A callback of an operation: the operation's own failure, which it reports to its caller.
    }

    /// <summary>What the cancelling thread does with a source handed to it.</summary>
    protected virtual void CancelOnCancellingThread() => CancelQuietly();

    /// <summary>The end of this source's cancel if it has begun and not ended; otherwise null.</summary>
    internal Task? CancelEnded()
    {
        if (Volatile.Read(ref _cancelState) != Cancelling) return null;
        if (Volatile.Read(ref _cancelEnded) is null) Interlocked.CompareExchange(ref _cancelEnded, new(), null);
        return Volatile.Read(ref _cancelState) == Cancelling ? _cancelEnded!.Task : null; // else it ended meanwhile
    }

    /// <summary>Hands the cancel to the cancelling thread (see the header). Any thread; never blocks.</summary>
    internal void QueueCancel() => Canceller.Queue(this);

    /// <summary>Starts the cancelling thread if it is not running yet. Call it from a greenlet's own code when the source
    /// is made, not inside a kill or a timer, which may run on the hub: starting a thread waits for it.</summary>
    internal static void EnsureCancellerStarted() => Canceller.EnsureStarted();

    /// <summary>The thread that cancels the sources handed to it, one after another.</summary>
    private static class Canceller
    {
        private static readonly System.Collections.Concurrent.ConcurrentQueue<GatedCancellationSource> s_queue = new();
        // A futex word, not a SemaphoreSlim: queueing runs on the hub, where a semaphore's Release could meet its lock
        // held by this thread's Wait and block the hub.
        private static readonly Scheduling.Parker s_queued = new();
        private static int s_started;

        public static void EnsureStarted()
        {
            if (Volatile.Read(ref s_started) == 0 && Interlocked.Exchange(ref s_started, 1) == 0)
                Scheduling.RuntimeThread.Start(new Thread(Run) { IsBackground = true, Name = "GreenRuntime cancellations" });
        }

        public static void Queue(GatedCancellationSource source)
        {
            s_queue.Enqueue(source);
            s_queued.Unpark();
        }

        private static void Run()
        {
            while (true)
            {
                s_queued.Park();
                while (s_queue.TryDequeue(out var source))
                    source.CancelOnCancellingThread();
            }
        }
    }
}
