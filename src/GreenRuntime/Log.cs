using Microsoft.Extensions.Logging;

namespace GreenRuntime;

/// <summary>
/// Every log message of the runtime, with its event id. Ids 1–99: hub and greenlets; 100–199: patching;
/// 200–299: servers. Categories: <c>GreenRuntime.Hub</c>, <c>GreenRuntime.Patch</c>, <c>GreenRuntime.Servers</c>.
/// </summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Error, Message = "{Greenlet} failed with {ExceptionType}")]
    public static partial void GreenletFailed(ILogger logger, Exception exception, string greenlet, string exceptionType);

    [LoggerMessage(EventId = 2, Level = LogLevel.Error, Message = "A hub callback ({Callback}) failed; callbacks must not throw")]
    public static partial void CallbackFailed(ILogger logger, Exception exception, string callback);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "A continuation of {Greenlet} (async void?) threw")]
    public static partial void ContinuationFailed(ILogger logger, Exception exception, string greenlet);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "{Greenlet} did not end within the grace of its hub's Dispose; it goes on to its end on a background thread that runs the hub for it (it is shielded, or blocked in a call that is not cooperative)")]
    public static partial void StuckAtDispose(ILogger logger, string greenlet);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "A patched blocking call ({Call}) ran its blocking original inside the hub callback {Callback} of {Hub}: hub callbacks (raw links, timers, Hub.Post actions) cannot park, so every greenlet of the hub waited. Do the blocking work in a greenlet (Link instead of RawLink, or spawn one from the callback). Logged once per callback.")]
    public static partial void NotCooperativeInCallback(ILogger logger, string call, string callback, string hub);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "{Hub} cannot create its I/O reactor ({Reason}); sockets wait through the .NET async engine instead, which is slower")]
    public static partial void ReactorUnavailable(ILogger logger, string hub, string reason);

    [LoggerMessage(EventId = 7, Level = LogLevel.Warning, Message = "{Reason} {Hub} goes on with the {Carriers} carrier threads it has until one comes back: greenlets to start wait for one, and blocking calls that would release the baton hold it. Raise the limit that ran out (docs/core.md, \"How many greenlets can be suspended\").")]
    public static partial void CarrierRefused(ILogger logger, string reason, string hub, int carriers);

    [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "A burst of suspended stackful greenlets on {Hub} made {Threads} carrier threads within {WithinMs} ms ({OnDemand} of them while the hub waited, the rest by the pool's refill thread beside it): a new thread costs about 0.1 ms of CPU time, and the greenlet that first runs on it waits until it has started. HubOptions.PrestartCarriers (GreenletsOptions.PrestartCarriers in ASP.NET Core) makes them before a burst the program expects (docs/core.md, \"A burst right after start\"). Logged once per process for each carrier stack size.")]
    public static partial void CarrierBurst(ILogger logger, string hub, int threads, long withinMs, int onDemand);

    // 10–19: the blocking monitor (Diagnostics/BlockingMonitor.cs). The stack is the one of the thread holding the
    // baton, captured while it was still blocked (see docs/diagnostics.md for how and what it costs).
    [LoggerMessage(EventId = 10, Level = LogLevel.Warning, Message = "{Holder} has held the baton of {Hub} for {Milliseconds} ms without yielding: every other greenlet of the hub is blocked. It is here (stack captured while blocked{StackNote}):\n{Stack}")]
    public static partial void HubBlocked(ILogger logger, string holder, string hub, long milliseconds, string stackNote, string stack);

    [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "{Holder} has held the baton of {Hub} for {Milliseconds} ms without yielding: every other greenlet of the hub is blocked. No stack: {Reason}")]
    public static partial void HubBlockedWithoutStack(ILogger logger, string holder, string hub, long milliseconds, string reason);

    [LoggerMessage(EventId = 12, Level = LogLevel.Information, Message = "{Holder} released the baton of {Hub} after {Bound} {Milliseconds} ms")]
    public static partial void HubUnblocked(ILogger logger, string holder, string hub, string bound, long milliseconds);

    [LoggerMessage(EventId = 13, Level = LogLevel.Error, Message = "The blocking monitor of {Hub} failed; it keeps watching")]
    public static partial void MonitorFailed(ILogger logger, Exception exception, string hub);

    [LoggerMessage(EventId = 14, Level = LogLevel.Error, Message = "A handler of Hub.Blocked of {Hub} threw")]
    public static partial void BlockedHandlerFailed(ILogger logger, Exception exception, string hub);

    [LoggerMessage(EventId = 16, Level = LogLevel.Warning, Message = "The greenlets of {Hub} were starved: for {Percent}% of the last {WindowMs} ms the baton holder was blocked in calls that are not cooperative while others waited, each hold too short to report alone. Held most by: {Holders}. Make those calls cooperative (Patch.All, Green.RunBlocking)")]
    public static partial void HubStarved(ILogger logger, string hub, int percent, int windowMs, string holders);

    [LoggerMessage(EventId = 17, Level = LogLevel.Critical, Message = "Hub {Index} of a hub group failed and stopped; its greenlets no longer run and the group places no more greenlets on it")]
    public static partial void GroupHubFailed(ILogger logger, Exception exception, int index);

    [LoggerMessage(EventId = 18, Level = LogLevel.Critical, Message = "The ready queue of {Hub} held a resume of {Greenlet}, which is {State} with {Carrier}: a resume that outlived its park (a bug of the runtime); it was dropped and the hub goes on")]
    public static partial void StaleResumeDropped(ILogger logger, string hub, string greenlet, string state, string carrier);
}
