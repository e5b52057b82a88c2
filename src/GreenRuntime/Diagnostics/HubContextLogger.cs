// The hub's logger: what the runtime logs where no greenlet runs is written by a greenlet.
//
// The runtime logs from hub context: a greenlet failure recorded by a hub callback (a stackless greenlet's end), a
// callback or link that threw, a patched call made inside a callback (event 6), the scheduler's own notes made in the
// middle of a step, while the greenlet that parks is still the current one (a stale resume dropped, a burst of carrier
// threads). Such code cannot park, so a contended lock inside the application's logger (every file sink takes one:
// Serilog's, NLog's, log4net's) is waited for with the baton held. When a greenlet of the same hub holds that lock —
// parked in the sink's file write, or queued for the baton after its released lock wait — neither can go on, and the
// hub hung for good (HubOptions.LoggerFactory is the application's own; under AddGreenlets it is the host's).
//
// So a log call made in hub context is queued, and a greenlet of the hub (the writer, started when the queue was empty)
// makes it: a greenlet can wait for the sink's lock with the baton released, like any greenlet that logs. The order of
// the hub's own messages is kept; against the application's messages they may come a scheduling round later. Calls
// made by greenlets, by other threads (the blocking monitor's) or while the hub is disposed go straight through.
//
// The one message that does not come here is the kernel's refusal of a carrier thread (event 7): the writer is a
// greenlet and may need the very carrier that was refused, so a pool thread writes that one.
//
// Rejected: a thread of its own for the queue (a wake through it for every message, and one more thread per process
// whose lifetime nothing owns); deferring every message (greenlet code can log where it is, and tests and users expect
// a greenlet's failure to be logged before Join returns).

using Microsoft.Extensions.Logging;

namespace GreenRuntime.Diagnostics;

/// <summary>The hub's <see cref="ILogger"/>; see the header of this file.</summary>
internal sealed class HubContextLogger(ILogger inner) : ILogger
{
    private const string WriterName = "hub log writer";

    private Hub? _hub;

    // Hub-only.
    private Queue<Action>? _queued;
    private Greenlet? _writer;

    /// <summary>Binds the logger to its hub, once the hub exists.</summary>
    public void Bind(Hub hub) => _hub = hub;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

    public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Log(null, logLevel, eventId, state, exception, formatter);

    /// <summary>
    /// This logger, writing its messages under <paramref name="context"/>, inline or queued for the writer: what a
    /// greenlet's failure is logged through (Hub.Finish), so that its creator's logging scopes and Activity go with the
    /// message wherever its end is recorded.
    /// </summary>
    public ILogger Under(ExecutionContext context) => new ContextBound(this, context);

    private void Log<TState>(ExecutionContext? under, LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (_hub is not { InHubContext: true })
        {
            LogKeepingContext(under, logLevel, eventId, state, exception, formatter);
            return;
        }
        (_queued ??= new()).Enqueue(() => LogKeepingContext(under, logLevel, eventId, state, exception, formatter));
        if (_writer is null)
        {
            // It writes for the hub, under the default context: in the middle of a step this thread may still be in the
            // context of the greenlet that parks, whose AsyncLocal values (a request's trace) are not the hub's.
            _writer = new Greenlet(Write, WriterName) { Context = null };
            _writer.Start();
        }
    }

    /// <summary>
    /// Calls the application's logger, under <paramref name="under"/> when given, and gives the thread back the ambient
    /// context it had. A sink may set an AsyncLocal or a synchronization context as it writes (NUnit's console capture
    /// does); the runtime logs a failed greenlet on its carrier after the body's context was reset (Hub.RunStackful), and
    /// what the sink left there went with the free carrier to its next item (Scheduling/AmbientContext.cs, step 2).
    /// </summary>
    private void LogKeepingContext<TState>(ExecutionContext? under, LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var context = ExecutionContext.Capture(); // null while the flow is suppressed: then nothing can be put back
        var sync = SynchronizationContext.Current;
        if (under != null && context != null) ExecutionContext.Restore(under);
        try
        {
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
        finally
        {
            if (context != null && !ReferenceEquals(ExecutionContext.Capture(), context)) ExecutionContext.Restore(context);
            if (!ReferenceEquals(SynchronizationContext.Current, sync)) SynchronizationContext.SetSynchronizationContext(sync);
        }
    }

    /// <summary>What <see cref="Under"/> returns.</summary>
    private sealed class ContextBound(HubContextLogger logger, ExecutionContext context) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => logger.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => logger.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            logger.Log(context, logLevel, eventId, state, exception, formatter);
    }

    private void Write()
    {
        try
        {
            while (_queued!.TryDequeue(out var log))
            {
                try
                {
                    log();
                }
                catch (Exception e) when (e is not GreenletExit)
                {
                    // A logger that throws has nobody to tell: the message is lost, as it would be inline.
                }
            }
        }
        finally
        {
            _writer = null;
        }
    }
}
