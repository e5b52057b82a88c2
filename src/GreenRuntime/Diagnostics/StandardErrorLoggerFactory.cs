// The hub's logger when the application gives none: errors go to standard error.
//
// A greenlet that fails while nobody joins it is otherwise lost without a trace: gevent prints such a greenlet's
// traceback to stderr by default, and .NET prints an exception that ends a thread before the process dies. So the
// default writes what the runtime logs at Error and Critical (a failed greenlet, a callback that threw, a hub of a group
// that stopped, a server handler that failed) and nothing below: warnings and information (the blocking monitor's
// reports, carrier bursts) are for an application that asked for them with a factory of its own.
//
// One write per message (the level, category and event, the message, the exception's text), through Console.Error,
// whose writer is synchronized, so that lines of messages from several threads do not interleave. A write that fails
// (standard error closed) is dropped: logging never fails the code that logs.

using Microsoft.Extensions.Logging;

namespace GreenRuntime.Diagnostics;

/// <summary>The default <see cref="HubOptions.LoggerFactory"/>; see the header of this file.</summary>
internal sealed class StandardErrorLoggerFactory : ILoggerFactory
{
    public static readonly StandardErrorLoggerFactory Instance = new();

    private StandardErrorLoggerFactory()
    {
    }

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName);

    public void AddProvider(ILoggerProvider provider) =>
        throw new InvalidOperationException("The default HubOptions.LoggerFactory only writes errors to standard error and takes no providers: give HubOptions.LoggerFactory a factory of your own (LoggerFactory.Create(...)) to choose where the runtime logs.");

    public void Dispose()
    {
        // Shared by every hub that was given no factory: nothing to release.
    }

    public override string ToString() => "standard error (errors only)";

    private sealed class Logger(string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel is LogLevel.Error or LogLevel.Critical;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string level = logLevel == LogLevel.Critical ? "crit" : "fail";
            string text = $"{level}: {category}[{eventId.Id}] {formatter(state, exception)}";
            if (exception != null) text += Environment.NewLine + exception;
            try
            {
                Console.Error.WriteLine(text);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                // Standard error is gone: the message has nowhere to go.
            }
        }
    }
}
