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

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "{Greenlet} did not die when its hub was disposed; it is probably blocked in a call that is not cooperative")]
    public static partial void StuckAtDispose(ILogger logger, string greenlet);
}
