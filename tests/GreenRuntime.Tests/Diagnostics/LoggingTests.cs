using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Diagnostics;

[TestFixture]
public class LoggingTests
{
    [Test]
    public void A_failed_greenlet_is_logged_like_gevent_with_its_exception()
    {
        var logs = new ListLoggerProvider();
        using (var hub = new Hub(new HubOptions { LoggerFactory = logs }))
        {
            var doomed = Green.Spawn(() => throw new InvalidOperationException("boom"), "doomed");
            doomed.Join();

            var entry = logs.Entries.Single(e => e.Level == LogLevel.Error);
            Assert.That(entry.Category, Is.EqualTo("GreenRuntime.Hub"));
            Assert.That(entry.EventId.Id, Is.EqualTo(1));
            Assert.That(entry.Message, Is.EqualTo($"<Greenlet doomed#{doomed.Id}> failed with InvalidOperationException"));
            Assert.That(entry.Exception, Is.SameAs(doomed.Exception));
            Assert.That(entry.State, Does.Contain(new KeyValuePair<string, object?>("Greenlet", doomed.ToString())));
            Assert.That(entry.State, Does.Contain(new KeyValuePair<string, object?>("{OriginalFormat}", "{Greenlet} failed with {ExceptionType}")));
        }
    }

    [Test]
    public void Without_a_logger_factory_a_failed_greenlet_is_written_to_standard_error_and_nothing_below_an_error_is()
    {
        var stderr = new StringWriter();
        var saved = Console.Error;
        Console.SetError(TextWriter.Synchronized(stderr));
        try
        {
            // A 20 ms blocking monitor: the CPU-bound greenlet below makes it report (a warning, not written).
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(20) });
            var doomed = Green.Spawn(() => throw new InvalidOperationException("boom, unjoined"), "unjoined-doomed");
            var victim = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "unjoined-victim");
            var hog = Green.Spawn(() => Thread.Sleep(120), "unjoined-hog");
            Green.Sleep(0);
            victim.Kill();
            hog.Join();
            Green.Sleep(10); // a message made in hub context is written by the hub's log writer greenlet
            Assert.That(doomed.Exception, Is.InstanceOf<InvalidOperationException>());
        }
        finally
        {
            Console.SetError(saved);
        }

        string written = stderr.ToString();
        Assert.That(written, Does.Contain($"fail: GreenRuntime.Hub[1] <Greenlet unjoined-doomed#").And.Contain("> failed with InvalidOperationException"
            + Environment.NewLine + "System.InvalidOperationException: boom, unjoined"));
        Assert.That(written, Does.Not.Contain("unjoined-victim"), "a kill is not a failure");
        Assert.That(written, Does.Not.Contain("unjoined-hog"), "the blocking monitor's warning needs a factory of the application's");
    }

    [Test]
    public void A_logger_that_sets_an_AsyncLocal_as_it_writes_leaves_nothing_on_the_carrier_that_logged()
    {
        // NUnit's console capture sets one as it writes. The failure is logged on the greenlet's carrier once the body's
        // context was reset: what the sink left there stayed on the free carrier, holding the value alive (and broke step
        // 2 of Scheduling/AmbientContext.cs at the carrier's next item, which Debug builds check).
        var logger = new AsyncLocalSettingLogger();
        using (var hub = new Hub(new HubOptions { LoggerFactory = logger }))
        {
            var doomed = Green.Spawn(() => throw new InvalidOperationException("logged by a sink that sets an AsyncLocal"));
            doomed.Join();
            Green.Sleep(10); // the carrier that ran it is back in the pool, parked
        }
        Assert.That(logger.Logged, Is.EqualTo(1));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.That(logger.Payload!.IsAlive, Is.False, "the value the sink set is not kept by the carrier's context");
    }

    [Test]
    public void A_failed_greenlet_is_logged_under_the_context_it_was_spawned_in()
    {
        // What a logging scope or the request's Activity is: an AsyncLocal of the creator (a request that spawned it).
        var request = new AsyncLocal<string?>();
        var logger = new AsyncLocalReadingLogger(request);
        using var hub = new Hub(new HubOptions { LoggerFactory = logger });
        Greenlet failed, killed, stackless;
        request.Value = "request 7";
        try
        {
            failed = Green.Spawn(() => throw new InvalidOperationException("failed in its body"), "failed-in-body");
            killed = Green.Spawn(() => { }, "killed-unstarted");
            stackless = Green.SpawnAsync(async () =>
            {
                await Task.Yield();
                throw new InvalidOperationException("failed after an await");
            }, "failed-stackless");
        }
        finally
        {
            request.Value = null;
        }
        killed.Kill(new InvalidOperationException("killed before it started"), block: false); // finished by this greenlet
        failed.Join();
        stackless.Join(); // its end is recorded by a hub callback, and the message queued for the hub's log writer
        Green.Sleep(10);
        Assert.That(logger.Seen, Is.EquivalentTo(new[] { ("failed-in-body", "request 7"), ("killed-unstarted", "request 7"), ("failed-stackless", "request 7") }));
        Assert.That(request.Value, Is.Null, "the killer's own context is given back");
    }

    /// <summary>A factory that is its own logger, of errors: for the tests that watch what a sink sees as it writes.</summary>
    private abstract class ErrorSink : ILoggerFactory, ILogger
    {
        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public abstract void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter);
    }

    private sealed class AsyncLocalReadingLogger(AsyncLocal<string?> request) : ErrorSink
    {
        public readonly List<(string Greenlet, string? Request)> Seen = [];

        public override void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (eventId.Id != 1) return;
            string name = formatter(state, exception).Split(' ')[1].Split('#')[0];
            Seen.Add((name, request.Value));
        }
    }

    private sealed class AsyncLocalSettingLogger : ErrorSink
    {
        private static readonly AsyncLocal<object?> Marker = new();

        public int Logged;

        public WeakReference? Payload;

        public override void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            Logged++;
            var payload = new byte[1024];
            Payload = new WeakReference(payload);
            Marker.Value = payload;
        }
    }

    [Test]
    public void The_default_logger_factory_takes_no_providers_and_says_what_to_do_instead()
    {
        var factory = new HubOptions().LoggerFactory;
        var e = Assert.Throws<InvalidOperationException>(() => factory.AddProvider(new ListLoggerProvider()))!;
        Assert.That(e.Message, Does.Contain("give HubOptions.LoggerFactory a factory of your own"));
    }

    [Test]
    public void A_killed_greenlet_is_not_a_failure_and_is_not_logged()
    {
        var logs = new ListLoggerProvider();
        using var hub = new Hub(new HubOptions { LoggerFactory = logs });
        var g = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "victim");
        Green.Sleep(0);
        g.Kill();
        Assert.That(logs.Entries.Where(e => e.Level >= LogLevel.Warning), Is.Empty);
    }

    [Test]
    public void A_burst_of_carrier_threads_made_on_demand_is_noted_once_naming_PrestartCarriers()
    {
        int stackSize = 256 * 1024 + 17 * 4096; // a pool of its own
        var pool = GreenRuntime.Scheduling.CarrierPool.For(stackSize);
        pool.BurstNoteThreshold = 1; // the first thread made for demand is a burst (256 within a second by default)
        var logs = new ListLoggerProvider();
        using var hub = new Hub(new HubOptions { LoggerFactory = logs, CarrierStackSize = stackSize });
        for (int round = 0; round < 2; round++)
        {
            // Two carriers made ahead by the constructor; six suspended greenlets need more, made while the hub waits.
            var sleepers = Enumerable.Range(0, 6).Select(_ => Green.Spawn(() => Green.Sleep(30))).ToList();
            Green.JoinAll(sleepers, raiseError: true);
            Green.Sleep(10); // the note is written by the hub's log writer greenlet
        }
        var notes = logs.Entries.Where(e => e.EventId.Id == 8).ToList();
        Assert.That(notes, Has.Count.EqualTo(1), "once per pool, however many bursts");
        Assert.That(notes[0].Level, Is.EqualTo(LogLevel.Information));
        // The rent that found none idle wakes the refill thread before it makes its own thread: either may be counted first.
        Assert.That(notes[0].Message, Does.StartWith($"A burst of suspended stackful greenlets on {hub} made 1 carrier threads within")
            .And.Match(@"within [0-9]+ ms \([01] of them while the hub waited").And.Contain("HubOptions.PrestartCarriers"));
        var carriers = hub.GetRunInfo().Carriers;
        Assert.That(carriers.MadeOnDemand, Is.GreaterThanOrEqualTo(1));
        Assert.That(carriers.Prestarted, Is.EqualTo(2));
        Assert.That(hub.FormatRunInfo(), Does.Match(@"made [0-9,]+ on demand, [0-9,]+ by refill, 2 prestarted"));
    }

    [Test]
    public void A_carrier_thread_the_kernel_refuses_is_logged_while_every_carrier_stays_taken()
    {
        int stackSize = 256 * 1024 + 19 * 4096; // a pool of its own
        var pool = GreenRuntime.Scheduling.CarrierPool.For(stackSize);
        var logs = new ListLoggerProvider();
        using var hub = new Hub(new HubOptions { LoggerFactory = logs, CarrierStackSize = stackSize, PrestartCarriers = 2 });
        pool.RefuseStartsForTesting = int.MaxValue;
        try
        {
            // Both carriers kept by parked greenlets: the third needs a thread the kernel refuses, and waits for one. The
            // warning must not wait with it (the hub's log writer is a greenlet, which would need a carrier too).
            var release = new Event();
            var keepers = Enumerable.Range(0, 2).Select(_ => Green.Spawn(() => release.Wait())).ToList();
            var waiter = Green.Spawn(() => 3);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!logs.Entries.Any(e => e.EventId.Id == 7) && DateTime.UtcNow < deadline) Green.Sleep(5);
            Assert.That(waiter.Ready, Is.False, "the greenlet still waits for a carrier");
            var refused = logs.Entries.Where(e => e.EventId.Id == 7).ToList();
            Assert.That(refused, Has.Count.EqualTo(1));
            Assert.That(refused[0].Level, Is.EqualTo(LogLevel.Warning));
            Assert.That(refused[0].OnThreadPool, Is.True, "written off the hub");
            Assert.That(refused[0].Message, Does.StartWith("The kernel refused a new carrier thread (refused for a test).")
                .And.Contain($"{hub} goes on with the 2 carrier threads it has"));
            release.Set();
            Assert.That(waiter.Get(), Is.EqualTo(3));
            Assert.That(Green.JoinAll(keepers, TimeSpan.FromSeconds(10)), Has.Count.EqualTo(2));
        }
        finally
        {
            pool.RefuseStartsForTesting = 0;
        }
        Assert.That(logs.Entries.Count(e => e.EventId.Id == 7), Is.EqualTo(1), "once per hub");
    }

    [Test]
    public void What_the_scheduler_logs_in_the_middle_of_a_step_is_written_by_the_hub_in_the_default_context()
    {
        var logs = new ListLoggerProvider();
        using var hub = new Hub(new HubOptions { LoggerFactory = logs });
        var ended = Green.Spawn(() => 1, "ended");
        ended.Join();
        Hub.DropStaleResumesForTesting = true;
        try
        {
            // A stale resume is dropped and logged (event 18) by main's own thread as it yields, in main's context.
            ListLoggerProvider.Ambient.Value = "main's request";
            hub.EnqueueForTesting(GreenRuntime.Scheduling.RunItem.ForResume(ended));
            Green.Sleep(0);
            Green.Sleep(10);
        }
        finally
        {
            Hub.DropStaleResumesForTesting = false;
            ListLoggerProvider.Ambient.Value = null;
        }
        var dropped = logs.Entries.Single(e => e.EventId.Id == 18);
        Assert.That(dropped.Ambient, Is.Null, "not in the context of the greenlet whose thread ran the step");
        Assert.That(dropped.OnThreadPool, Is.False);
    }
}
