namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// Parks the current greenlet until <paramref name="task"/> completes or <paramref name="timeout"/> elapses (the
    /// bridge from any .NET asynchronous API to a blocking call on a greenlet). The task's continuation posts the wake
    /// from whatever thread completes it; the wait counts as outstanding work, so the hub does not report a deadlock
    /// (<see cref="LoopExitException"/>) meanwhile.
    /// </summary>
    /// <remarks>
    /// <para>Unlike <see cref="Green.Wait(Task, TimeSpan?)"/> this neither throws the task's exception nor a timeout: it
    /// reports whether the task completed, and the caller reads the task (and cancels it after a timeout).</para>
    /// <para>A kill or an expired timeout of the greenlet is thrown from here while the task may still be running. With
    /// <paramref name="cancelOnInterrupt"/> the operation is cancelled first; with <paramref name="drainOnInterrupt"/> it
    /// is also waited for (a real, short wait inside <see cref="SuppressCooperation"/>) before the exception propagates:
    /// use that when the operation reads or writes memory the unwinding frame owns (a pooled or pinned buffer).</para>
    /// </remarks>
    /// <param name="task">The operation to wait for.</param>
    /// <param name="timeout">How long to wait; null or <see cref="Timeout.InfiniteTimeSpan"/>: no limit.</param>
    /// <param name="reason">What run-info reports the greenlet as waiting for.</param>
    /// <param name="cancelOnInterrupt">Cancelled (exceptions of its callbacks swallowed) when a kill or timeout interrupts the park.</param>
    /// <param name="drainOnInterrupt">Whether an interrupted park waits for the task to finish before it throws.</param>
    /// <returns>Whether the task has completed (false: the timeout elapsed first).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="task"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park (see <see cref="BeginPark"/>).</exception>
    public static bool WaitForTask(Task task, TimeSpan? timeout = null, WaitReason reason = WaitReason.Task, CancellationTokenSource? cancelOnInterrupt = null, bool drainOnInterrupt = false)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.IsCompleted) return true;
        if (timeout is { } t && t < TimeSpan.Zero && t != Timeout.InfiniteTimeSpan)
            throw new ArgumentOutOfRangeException(nameof(timeout), t, "The timeout must not be negative (use null or Timeout.InfiniteTimeSpan for none).");
        if (t_suppressed != 0)
            throw new InvalidOperationException("Cannot park inside Parking.SuppressCooperation(): wait for the task with an ordinary blocking wait there.");
        var hub = Hub.Current;
        try
        {
            hub.WaitForTask(task, timeout, reason == WaitReason.None ? WaitReason.Task : reason);
        }
        catch
        {
            CancelQuietly(cancelOnInterrupt);
            if (drainOnInterrupt) WaitBlocking(task);
            throw;
        }
        return task.IsCompleted;
    }

    /// <summary>Cancels an operation that a kill or a timeout interrupted, swallowing what a cancellation callback throws
    /// (it is the operation's business) and a source already disposed. Null does nothing.</summary>
    /// <param name="cancel">The operation's cancellation source.</param>
    public static void CancelQuietly(CancellationTokenSource? cancel)
    {
        if (cancel is null) return;
        try
        {
            cancel.Cancel();
        }
        catch (AggregateException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>Blocks the thread (not cooperatively, inside <see cref="SuppressCooperation"/>) until <paramref name="task"/>
    /// has finished, ignoring its outcome: for an interrupted operation that may still use memory the caller is about to
    /// give back (a pooled buffer), after <see cref="CancelQuietly"/> made it end soon.</summary>
    /// <param name="task">The interrupted operation.</param>
    public static void WaitBlocking(Task task)
    {
        if (task.IsCompleted) return;
        using (SuppressCooperation())
        {
            try
            {
                task.Wait();
            }
            catch (AggregateException)
            {
            }
        }
    }
}
