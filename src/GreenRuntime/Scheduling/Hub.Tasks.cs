using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>
    /// Parks the current greenlet until <paramref name="task"/> completes or the timeout elapses. The task's
    /// continuation posts the wake to the inbox from whatever thread completes it. The wait counts as an
    /// outstanding operation, so the hub does not declare LoopExit meanwhile. This is the bridge every
    /// cooperative I/O call is built on.
    /// </summary>
    /// <remarks>
    /// A task created with <see cref="TaskCreationOptions.RunContinuationsAsynchronously"/> (what libraries' task
    /// completion sources usually are) would send that continuation through the thread pool, which legacy blocking code
    /// often keeps busy: the wake then waited for the pool to grow (2.4 s instead of 50 ms with the pool's threads held).
    /// .NET's own blocking wait is signalled directly even for such a task, so there the greenlet runs it on its own
    /// thread with the baton released (Hub.Blocking.cs), interrupted by a kill or timeout like any released wait.
    /// </remarks>
    internal void WaitForTask(Task task, TimeSpan? timeout, WaitReason reason)
    {
        if ((task.CreationOptions & TaskCreationOptions.RunContinuationsAsynchronously) != 0 && CanReleaseBaton
            && (timeout is null || timeout == Timeout.InfiniteTimeSpan || Options.TimeProvider == TimeProvider.System)) // .NET's wait keeps real time
        {
            int milliseconds = timeout is { } t && t != Timeout.InfiniteTimeSpan ? (int)Math.Min(Math.Ceiling(t.TotalMilliseconds), int.MaxValue - 1) : Timeout.Infinite;
            RunReleased(s_blockingTaskWait, (task, milliseconds), reason, raisePending: true, interruptible: true);
            return;
        }
        var token = BeginPark(reason);
        _pendingExternal++;
        HubTimer? timer = null;
        try
        {
            task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => PostWake(token));
            if (timeout is { } limit && limit != Timeout.InfiniteTimeSpan) timer = AddWakeTimer(limit, token, TimedOut);
            EndPark(token);
        }
        finally
        {
            _pendingExternal--;
            timer?.Cancel();
        }
    }

    /// <summary>.NET's blocking wait for a task's end, its outcome left to the caller (run released, with no hub: the
    /// patched wait runs the original there).</summary>
    private static readonly Func<(Task Task, int Milliseconds), bool> s_blockingTaskWait = static s =>
    {
        try
        {
            return s.Task.Wait(s.Milliseconds);
        }
        catch (AggregateException)
        {
            return true; // faulted or cancelled: ended all the same
        }
    };
}
