using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Diagnostics;

/// <summary>One log call as the runtime made it.</summary>
public sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception, IReadOnlyList<KeyValuePair<string, object?>> State)
{
    /// <summary>Whether a thread-pool thread made the call.</summary>
    public bool OnThreadPool { get; init; }

    /// <summary><see cref="ListLoggerProvider.Ambient"/> as the call saw it: which ExecutionContext it ran in.</summary>
    public string? Ambient { get; init; }
}

/// <summary>An ILoggerProvider that records every entry, and the smallest ILoggerFactory that serves it (no extra package).</summary>
public sealed class ListLoggerProvider : ILoggerProvider, ILoggerFactory
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    /// <summary>An AsyncLocal value each entry records (<see cref="LogEntry.Ambient"/>): a test sets it to see whose
    /// ExecutionContext a log call ran in.</summary>
    public static readonly AsyncLocal<string?> Ambient = new();

    public IReadOnlyList<LogEntry> Entries => _entries.ToArray();

    public ILogger CreateLogger(string categoryName) => new ListLogger(this, categoryName);

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException("This test factory has exactly one provider.");

    public void Dispose() { }

    private sealed class ListLogger(ListLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var fields = state as IReadOnlyList<KeyValuePair<string, object?>> ?? [];
            owner._entries.Enqueue(new LogEntry(category, logLevel, eventId, formatter(state, exception), exception, fields.ToList()) { OnThreadPool = Thread.CurrentThread.IsThreadPoolThread, Ambient = Ambient.Value });
        }
    }
}
