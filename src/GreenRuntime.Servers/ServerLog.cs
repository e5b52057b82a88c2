using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>
/// The servers' log messages (event ids 200–299, category <c>GreenRuntime.Servers</c>; the shared id plan is in
/// <c>Log.cs</c>). Kept apart from <c>Log.cs</c> so the servers do not edit the core's file.
/// </summary>
internal static partial class ServerLog
{
    /// <summary>The category every server logs under.</summary>
    public const string Category = "GreenRuntime.Servers";

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "{Server} listening on {EndPoint}")]
    public static partial void Started(ILogger logger, string server, string endPoint);

    [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "{Server} stopped")]
    public static partial void Stopped(ILogger logger, string server);

    [LoggerMessage(EventId = 202, Level = LogLevel.Error, Message = "The handler for {RemoteEndPoint} failed with {ExceptionType}; that connection was closed")]
    public static partial void HandlerFailed(ILogger logger, Exception exception, string remoteEndPoint, string exceptionType);

    [LoggerMessage(EventId = 203, Level = LogLevel.Error, Message = "Accepting a connection on {EndPoint} failed ({Error}); retrying in {DelayMs} ms")]
    public static partial void AcceptFailed(ILogger logger, Exception exception, string endPoint, string error, int delayMs);

    [LoggerMessage(EventId = 204, Level = LogLevel.Warning, Message = "{Server}: {Count} handler(s) still running after the stop timeout were killed")]
    public static partial void HandlersKilledAtStop(ILogger logger, string server, int count);

    [LoggerMessage(EventId = 205, Level = LogLevel.Debug, Message = "Bad request from {RemoteEndPoint}: {Status} {Reason}")]
    public static partial void BadRequest(ILogger logger, string remoteEndPoint, int status, string reason);

    [LoggerMessage(EventId = 206, Level = LogLevel.Error, Message = "The HTTP handler for {Method} {Target} from {RemoteEndPoint} failed with {ExceptionType}; {Outcome}")]
    public static partial void HttpHandlerFailed(ILogger logger, Exception exception, string method, string target, string remoteEndPoint, string exceptionType, string outcome);

    [LoggerMessage(EventId = 207, Level = LogLevel.Warning, Message = "The response to {Method} {Target} declared Content-Length {Declared} but the handler wrote {Written} bytes; the connection was closed")]
    public static partial void ContentLengthMismatch(ILogger logger, string method, string target, long declared, long written);

    [LoggerMessage(EventId = 208, Level = LogLevel.Debug, Message = "Connection from {RemoteEndPoint} ended: {Reason}")]
    public static partial void ConnectionEnded(ILogger logger, string remoteEndPoint, string reason);
}
