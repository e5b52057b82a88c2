using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Soak;

/// <summary>
/// The soak's logger: the faults it injects make greenlets and handlers fail on purpose, and the workloads check
/// those outcomes themselves, so errors are counted by event (printed with the summary) rather than written one by
/// one; a Critical message (a hub of a group that stopped, a stale resume the scheduler dropped) is a runtime bug and
/// breaks the run.
/// </summary>
internal sealed class SoakLog(Ledger ledger) : ILoggerFactory, ILogger
{
    private readonly ConcurrentDictionary<int, int> _errors = new();

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException("The soak's logger takes no providers.");

    public void Dispose()
    {
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error && logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        if (logLevel == LogLevel.Critical)
        {
            ledger.Violate($"the runtime logged a critical message (event {eventId.Id}): {formatter(state, exception)} {exception}");
            return;
        }
        _errors.AddOrUpdate(eventId.Id, 1, static (_, n) => n + 1);
    }

    /// <summary>The errors logged, by event id: "1 × 412, 206 × 110".</summary>
    public string Summary() =>
        _errors.IsEmpty ? "none" : string.Join(", ", _errors.OrderBy(e => e.Key).Select(e => $"event {e.Key} × {e.Value}"));
}
