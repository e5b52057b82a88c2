namespace GreenRuntime.AspNetCore.Requests;

/// <summary>
/// The gate of <see cref="GreenletsOptions.MaxConcurrentRequests"/>: at most <c>limit</c> requests hold a slot; the
/// others wait without a thread, and slots are handed over in arrival order.
/// </summary>
/// <remarks>
/// Invariant: <c>_running &lt;= limit</c>, and a waiter is queued only while every slot is taken. A slot that is given
/// back goes straight to the oldest waiter still waiting (its count never drops in between, so a newcomer cannot
/// overtake the queue); a waiter whose request was aborted completes as cancelled and is skipped. Waiters are
/// completed after the lock is released, and their continuations run asynchronously (never on the releasing thread).
/// </remarks>
internal sealed class RequestQueue
{
    private readonly Lock _lock = new();
    private readonly Queue<TaskCompletionSource> _waiters = new();
    private readonly int _limit;
    private int _running;

    public RequestQueue(int limit) => _limit = limit;

    /// <summary>Requests holding a slot (for tests and diagnostics).</summary>
    public int Running
    {
        get
        {
            lock (_lock) return _running;
        }
    }

    /// <summary>Requests waiting for a slot (cancelled ones may still be counted until they reach the front).</summary>
    public int Waiting
    {
        get
        {
            lock (_lock) return _waiters.Count;
        }
    }

    /// <summary>Takes a slot, waiting in FIFO order when none is free; cancelled by <paramref name="aborted"/>.</summary>
    public Task EnterAsync(CancellationToken aborted)
    {
        TaskCompletionSource waiter;
        lock (_lock)
        {
            if (_running < _limit)
            {
                _running++;
                return Task.CompletedTask;
            }
            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue(waiter);
        }
        if (aborted.CanBeCanceled)
        {
            // The registration ends with the wait; a cancelled waiter stays queued and is skipped by Exit.
            var registration = aborted.UnsafeRegister(static (s, t) => ((TaskCompletionSource)s!).TrySetCanceled(t), waiter);
            waiter.Task.ContinueWith(static (_, r) => ((CancellationTokenRegistration)r!).Dispose(), registration,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        return waiter.Task;
    }

    /// <summary>Gives a slot back: to the oldest live waiter, or to the pool of free slots.</summary>
    public void Exit()
    {
        while (true)
        {
            TaskCompletionSource? next = null;
            lock (_lock)
            {
                if (_waiters.Count > 0) next = _waiters.Dequeue();
                else if (_running > 0) _running--;
                else throw new InvalidOperationException("Invariant broken: a request gave back a slot of MaxConcurrentRequests that it did not hold.");
            }
            if (next == null) return;
            // The slot passes to `next` without _running changing; one already cancelled passes it on to the one after.
            if (next.TrySetResult()) return;
        }
    }
}
