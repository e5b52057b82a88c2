using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests;

/// <summary>Gives every test a fresh hub bound to the test thread, and a logger that records what the hub logs.</summary>
public abstract class HubTest
{
    protected Hub Hub = null!;
    protected RecordingLoggerProvider Logs = null!;

    protected virtual HubOptions CreateOptions(ILoggerFactory loggerFactory) => new() { LoggerFactory = loggerFactory };

    [SetUp]
    public void CreateHub()
    {
        Logs = new RecordingLoggerProvider();
        Hub = new Hub(CreateOptions(LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Trace))));
    }

    [TearDown]
    public void DisposeHub() => Hub.Dispose();
}

/// <summary>An ILoggerProvider that keeps every entry in memory.</summary>
public sealed class RecordingLoggerProvider : ILoggerProvider
{
    public readonly List<LogEntry> Entries = new();

    public ILogger CreateLogger(string categoryName) => new Recorder(this, categoryName);

    public void Dispose() { }

    public sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception);

    private sealed class Recorder(RecordingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (owner.Entries) owner.Entries.Add(new LogEntry(category, logLevel, eventId, formatter(state, exception), exception));
        }
    }
}
