using Microsoft.Extensions.Logging;

namespace GreenRuntime.AspNetCore;

/// <summary>Log messages of the ASP.NET Core integration: category <c>GreenRuntime.AspNetCore</c>, event ids 300–399
/// (the runtime's own are below 100, patching's 100–199, the servers' 200–299).</summary>
internal static partial class AspNetCoreLog
{
    public const string Category = "GreenRuntime.AspNetCore";

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Requests run in greenlets on {Hubs} hubs (at most {Limit} at once)")]
    public static partial void Started(ILogger logger, int hubs, string limit);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Patch.All(): {Patched} methods patched, {AlreadyPatched} already patched, {Refused} refused")]
    public static partial void Patched(ILogger logger, int patched, int alreadyPatched, int refused);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "The host stopped with {Count} requests still running in greenlets after {Waited}; the hubs kill them")]
    public static partial void StoppedWithRequests(ILogger logger, int count, TimeSpan waited);

    [LoggerMessage(EventId = 304, Level = LogLevel.Error, Message = "A callback posted to a request's synchronization context failed")]
    public static partial void PostedCallbackFailed(ILogger logger, Exception exception);
}
