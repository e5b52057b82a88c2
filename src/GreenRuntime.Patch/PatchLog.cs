using Microsoft.Extensions.Logging;

namespace GreenRuntime;

/// <summary>Log messages of patching: category <c>GreenRuntime.Patch</c>, event ids 100–199 (see GreenRuntime's Log).</summary>
internal static partial class PatchLog
{
    public const string Category = "GreenRuntime.Patch";

    [LoggerMessage(EventId = 100, Level = LogLevel.Debug, Message = "Patched {Set}: {Method}")]
    public static partial void Patched(ILogger logger, string set, string method);

    [LoggerMessage(EventId = 101, Level = LogLevel.Debug, Message = "Already patched {Set}: {Method}")]
    public static partial void AlreadyPatched(ILogger logger, string set, string method);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "Not patched {Set}: {Method}: {Reason}")]
    public static partial void Refused(ILogger logger, string set, string method, string reason);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "Patch {Sets}: {Patched} patched, {AlreadyPatched} already patched, {Refused} refused")]
    public static partial void Summary(ILogger logger, string sets, int patched, int alreadyPatched, int refused);

    [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "Undid {Count} patches")]
    public static partial void Undone(ILogger logger, int count);

    [LoggerMessage(EventId = 105, Level = LogLevel.Information, Message = "Not patched, no call loses cooperation by it {Set}: {Method}: {Reason}")]
    public static partial void RefusedHarmlessly(ILogger logger, string set, string method, string reason);
}
