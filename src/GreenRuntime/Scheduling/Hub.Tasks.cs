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
    internal void WaitForTask(Task task, TimeSpan? timeout, WaitReason reason)
    {
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
}
