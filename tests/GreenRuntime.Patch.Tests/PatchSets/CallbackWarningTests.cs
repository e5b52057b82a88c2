using Microsoft.Extensions.Logging;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A patched call made where the hub cannot park (a raw link, a Hub.Post action) runs the blocking original; it is
/// logged once per callback (event 6) instead of passing silently. Links run in their own greenlet and stay cooperative.
/// </summary>
[TestFixture]
public class CallbackWarningTests : PatchedHubTest
{
    private sealed class Recorder : ILoggerFactory, ILogger
    {
        public readonly List<(EventId Id, string Message)> Entries = new();
        public ILogger CreateLogger(string categoryName) => this;
        public void AddProvider(ILoggerProvider provider) { }
        public void Dispose() { }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Entries) Entries.Add((eventId, formatter(state, exception)));
        }
    }

    private static void SleepInRawLink(Greenlet _) => Thread.Sleep(1);

    [Test]
    public void APatchedCallInARawLinkIsLoggedOncePerCallbackAndALinkStaysCooperative()
    {
        HubUnderTest.Dispose();
        var recorder = new Recorder();
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null, LoggerFactory = recorder });
        for (int i = 0; i < 3; i++)
        {
            var g = Green.Spawn(() => { });
            g.RawLink(SleepInRawLink);
            g.Join();
            Green.Sleep(5);
        }
        var warnings = recorder.Entries.Where(e => e.Id.Id == 6).ToList();
        Assert.That(warnings, Has.Count.EqualTo(1), "once per callback, not once per call");
        Assert.That(warnings[0].Message, Does.Contain("Sleep from CallbackWarningTests.SleepInRawLink"));

        // A link runs in its own greenlet: its Thread.Sleep parks only that greenlet.
        int ticks = 0;
        var ticker = Green.Spawn(() => { for (int i = 0; i < 10; i++) { Thread.Sleep(5); ticks++; } });
        var linked = Green.Spawn(() => { });
        var linkDone = new Event();
        linked.Link(_ => { Thread.Sleep(100); linkDone.Set(); });
        Assert.That(linkDone.Wait(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(ticks, Is.GreaterThan(3), "other greenlets ran while the link slept");
        ticker.Join();
        Assert.That(recorder.Entries.Count(e => e.Id.Id == 6), Is.EqualTo(1));
    }

    [Test]
    public void WhatTheHubLogsOutsideAnyGreenletWaitsForALoggerLockThatAParkedGreenletHolds()
    {
        // The application's logger takes a lock per call, as file sinks do. A stackless greenlet's failure, a callback
        // that throws and a patched call inside a raw link are logged by hub code, which cannot park: waiting there for
        // that lock while a greenlet of the hub held it (parked mid-write) hung the hub for good. On a thread of its own
        // with a deadline, so that a hang fails the test instead of stopping the run.
        HubUnderTest.Dispose();
        var recorder = new Recorder();
        Exception? failure = null;
        var run = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxBlockingTime = null, LoggerFactory = recorder });
                var writer = Green.Spawn(() =>
                {
                    lock (recorder.Entries) Thread.Sleep(100); // a greenlet in the middle of a log line
                });
                var failing = Green.SpawnAsync(async () =>
                {
                    await Green.SleepAsync(TimeSpan.FromMilliseconds(10));
                    throw new InvalidOperationException("boom");
                }, "failing");
                hub.Post(() => throw new InvalidOperationException("a callback that throws"));
                var linked = Green.Spawn(() => Thread.Sleep(20));
                linked.RawLink(SleepInRawLink);
                Green.JoinAll([writer, failing, linked]);
                Green.Sleep(50); // the queued messages are written meanwhile
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        run.Start();
        Assert.That(run.Join(TimeSpan.FromSeconds(20)), Is.True, "the hub hung on its logger's lock");
        Assert.That(failure, Is.Null);
        List<int> ids;
        lock (recorder.Entries) ids = recorder.Entries.Select(e => e.Id.Id).ToList();
        Assert.That(ids, Does.Contain(1).And.Contain(2).And.Contain(6), "each message was logged");
    }
}
