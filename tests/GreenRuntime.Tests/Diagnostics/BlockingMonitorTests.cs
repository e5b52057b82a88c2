using System.Collections.Concurrent;
using GreenRuntime.Diagnostics;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Diagnostics;

/// <summary>
/// The blocking monitor: one report per episode, naming the holder and (on Linux) the frame that blocks, and none when
/// greenlets yield or the monitor is off. Timing bounds are generous: a stack capture pauses the process ~0.5 s and
/// the first one in a process takes longer.
/// </summary>
[TestFixture]
public class BlockingMonitorTests
{
    private static readonly TimeSpan ReportWait = TimeSpan.FromSeconds(20);
    private TimeSpan _savedInterval;
    private ListLoggerProvider _logs = null!;
    private ConcurrentQueue<HubBlockedReport> _reports = null!;
    private Hub? _hub;

    [SetUp]
    public void SetUp()
    {
        _savedInterval = BlockingMonitor.MinCaptureInterval;
        BlockingMonitor.MinCaptureInterval = TimeSpan.Zero; // every test may capture, whatever ran before it
        _logs = new ListLoggerProvider();
        _reports = new ConcurrentQueue<HubBlockedReport>();
        // A long-running process has warmed the capture up long ago (the first monitor does it); a test process may not have.
        Assert.That(ThreadStackCapture.WaitForWarmUp(TimeSpan.FromSeconds(30)), Is.True);
    }

    [TearDown]
    public void TearDown()
    {
        _hub?.Dispose();
        _hub = null;
        BlockingMonitor.MinCaptureInterval = _savedInterval;
    }

    private Hub CreateHub(TimeSpan? maxBlockingTime, bool captureStacks = true)
    {
        _hub = new Hub(new HubOptions { LoggerFactory = _logs, MaxBlockingTime = maxBlockingTime, CaptureBlockedStacks = captureStacks });
        _hub.Blocked += (_, report) => _reports.Enqueue(report);
        return _hub;
    }

    /// <summary>
    /// Stack captures are refused above ThreadStackCapture.MaxThreads threads (createdump's pause grows with them).
    /// Tests that ran before may have left many idle carriers; the pool retires them after 10 s idle.
    /// </summary>
    private static void WaitUntilFewThreads()
    {
        if (!OperatingSystem.IsLinux()) return;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(40);
        while (ThreadStackCapture.CountThreads() > ThreadStackCapture.MaxThreads / 2 && DateTime.UtcNow < deadline)
            Thread.Sleep(100);
        Assert.That(ThreadStackCapture.CountThreads(), Is.LessThanOrEqualTo(ThreadStackCapture.MaxThreads),
            "the process keeps too many threads for a stack capture");
    }

    /// <summary>Waits cooperatively (the hub idles meanwhile, which is never an episode) until reports arrived, then a
    /// few sampling intervals more, in which a second report would show up.</summary>
    private void WaitForReports(int count)
    {
        var deadline = DateTime.UtcNow + ReportWait;
        while (_reports.Count < count && DateTime.UtcNow < deadline) Green.Sleep(10);
        Green.Sleep(300);
    }

    [Test]
    public void A_greenlet_that_spins_300_ms_produces_exactly_one_report_naming_it_and_its_frame()
    {
        WaitUntilFewThreads();
        CreateHub(TimeSpan.FromMilliseconds(100));
        // Every spin must give exactly one report naming the spinner. The stack must name the spinning frame; on a
        // heavily loaded machine createdump may start too late for a 300 ms episode, so up to three spins are allowed
        // to get it (a broken capture fails all three).
        var misses = new List<string>();
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            var spinner = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(300)), "spinner");
            var other = Green.Spawn(() => Green.Sleep(10), "starved");
            Green.JoinAll([spinner, other]);
            WaitForReports(attempt);

            Assert.That(_reports, Has.Count.EqualTo(attempt), "exactly one report per spin");
            var report = _reports.Last();
            Assert.That(report.Greenlet, Is.SameAs(spinner));
            Assert.That(report.Holder, Is.EqualTo(spinner.ToString()));
            Assert.That(report.HubId, Is.EqualTo(_hub!.Id));
            Assert.That(report.BlockedFor, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(100)));

            var warnings = _logs.Entries.Where(e => e.Level == LogLevel.Warning).ToList();
            Assert.That(warnings, Has.Count.EqualTo(attempt));
            Assert.That(warnings[^1].Category, Is.EqualTo("GreenRuntime.Hub"));
            Assert.That(warnings[^1].EventId.Id, Is.EqualTo(report.StackTrace != null ? 10 : 11));
            Assert.That(warnings[^1].Message, Does.Contain($"<Greenlet spinner#{spinner.Id}> has held the baton"));
            Assert.That(_hub.GetRunInfo().BlockedEpisodes, Is.EqualTo(attempt));

            if (!OperatingSystem.IsLinux()) return; // stack capture is Linux-only: the reason says so
            if (report.StackTrace is { } stack && stack.Contains("GreenRuntime.Tests.Diagnostics.Busy.SpinWithoutYielding"))
            {
                Assert.That(warnings[^1].Message, Does.Contain("Busy.SpinWithoutYielding"));
                Assert.That(report.CaptureDuration, Is.GreaterThan(TimeSpan.Zero));
                return;
            }
            misses.Add(report.StackTrace ?? report.StackUnavailableReason ?? "?");
        }
        Assert.Fail("No report had the spinning frame in its stack: " + string.Join(" | ", misses));
    }

    [Test]
    public void An_unpatched_Thread_Sleep_is_caught_while_it_still_sleeps()
    {
        WaitUntilFewThreads();
        CreateHub(TimeSpan.FromMilliseconds(100));
        var sleeper = Green.Spawn(() => Busy.UnpatchedThreadSleep(TimeSpan.FromMilliseconds(400)), "legacy");
        sleeper.Join();
        WaitForReports(1);

        Assert.That(_reports, Has.Count.EqualTo(1));
        var report = _reports.Single();
        Assert.That(report.Greenlet, Is.SameAs(sleeper));
        if (OperatingSystem.IsLinux())
        {
            Assert.That(report.StackTrace, Is.Not.Null, () => $"No stack: {report.StackUnavailableReason}");
            Assert.That(report.StackTrace, Does.Contain("Busy.UnpatchedThreadSleep"));
        }
        // The end of the episode is logged once, after the warning.
        var ids = _logs.Entries.Select(e => e.EventId.Id).Where(id => id is >= 10 and < 20).ToList();
        Assert.That(ids, Is.EqualTo(new[] { report.StackTrace != null ? 10 : 11, 12 }));
    }

    [Test]
    public void A_greenlet_that_yields_regularly_produces_no_report()
    {
        // The spin as a whole outlasts the limit, each stretch between yields (5 ms) is far below it, even when a busy
        // machine preempts the spinning thread for a while.
        CreateHub(TimeSpan.FromMilliseconds(250));
        var worker = Green.Spawn(() => Busy.SpinYieldingOften(TimeSpan.FromMilliseconds(400)), "polite");
        var other = Green.Spawn(() => { for (int i = 0; i < 20; i++) Green.Sleep(10); }, "ticker");
        Green.JoinAll([worker, other]);
        Green.Sleep(300);

        Assert.That(_reports, Is.Empty);
        Assert.That(_logs.Entries.Where(e => e.Level >= LogLevel.Warning), Is.Empty);
        Assert.That(_hub!.GetRunInfo().BlockedEpisodes, Is.Zero);
    }

    [Test]
    public void A_disabled_monitor_produces_no_report()
    {
        CreateHub(maxBlockingTime: null);
        var spinner = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(300)), "spinner");
        spinner.Join();
        Green.Sleep(300);

        Assert.That(_reports, Is.Empty);
        Assert.That(_logs.Entries.Where(e => e.Level >= LogLevel.Warning), Is.Empty);
        Assert.That(_hub!.GetRunInfo().MonitorOn, Is.False);
    }

    [Test]
    public void Without_stack_capture_the_report_says_why_and_names_the_holder()
    {
        CreateHub(TimeSpan.FromMilliseconds(50), captureStacks: false);
        var spinner = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(250)), "spinner");
        spinner.Join();
        WaitForReports(1);

        var report = _reports.Single();
        Assert.That(report.Greenlet, Is.SameAs(spinner));
        Assert.That(report.StackTrace, Is.Null);
        Assert.That(report.StackUnavailableReason, Does.Contain("CaptureBlockedStacks"));
        var warning = _logs.Entries.Single(e => e.Level == LogLevel.Warning);
        Assert.That(warning.EventId.Id, Is.EqualTo(11));
        Assert.That(warning.State.Select(kv => kv.Key), Does.Contain("Holder").And.Contain("Milliseconds").And.Contain("{OriginalFormat}"));
    }

    [Test]
    public void No_stack_is_captured_for_a_report_that_nothing_reads()
    {
        // The default options: no logger, no Blocked handler. A capture would freeze the whole process for nobody.
        WaitUntilFewThreads();
        BlockingMonitor.MinCaptureInterval = TimeSpan.Zero;
        _hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(50) });
        long capturedBefore = ThreadStackCapture.CaptureTicks(System.Diagnostics.Stopwatch.GetTimestamp());
        var waiter = Green.Spawn(() => Green.Sleep(1));
        var spinner = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(400)), "spinner");
        Green.JoinAll([spinner, waiter]);
        Assert.That(_hub.GetRunInfo().BlockedEpisodes, Is.EqualTo(1), "the monitor saw the episode");
        Assert.That(ThreadStackCapture.CaptureTicks(System.Diagnostics.Stopwatch.GetTimestamp()), Is.EqualTo(capturedBefore), "and captured nothing");
    }

    [Test]
    public void A_blocking_hub_callback_is_reported_as_a_callback()
    {
        CreateHub(TimeSpan.FromMilliseconds(50), captureStacks: false);
        _hub!.Post(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(250)));
        Green.Sleep(10);
        WaitForReports(1);

        var report = _reports.Single();
        Assert.That(report.Greenlet, Is.Null);
        Assert.That(report.Holder, Is.EqualTo("a hub callback"));
    }

    [Test]
    public void The_main_greenlet_working_while_nothing_else_waits_is_not_blocking_anyone()
    {
        CreateHub(TimeSpan.FromMilliseconds(50), captureStacks: false);
        Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(250)); // no greenlet, timer or callback is kept waiting
        Thread.Sleep(100);
        Assert.That(_reports, Is.Empty);

        var starved = Green.Spawn(() => { }, "starved"); // now one waits for the main greenlet to yield
        Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(250));
        starved.Join();
        WaitForReports(1);
        Assert.That(_reports.Single().Greenlet, Is.SameAs(_hub!.MainGreenlet));
    }

    [Test]
    public void Two_episodes_give_two_reports()
    {
        CreateHub(TimeSpan.FromMilliseconds(50), captureStacks: false);
        // The monitor samples; while it writes a's report (slow the first time: JIT) it is not sampling, so b must
        // last well beyond MaxBlockingTime plus that time.
        var a = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(400)), "a");
        var b = Green.Spawn(() => Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(400)), "b");
        Green.JoinAll([a, b]);
        WaitForReports(2);
        Assert.That(_reports.Select(r => r.Holder), Is.EqualTo(new[] { a.ToString(), b.ToString() }),
            () => "log: " + string.Join(" | ", _logs.Entries.Select(e => e.Message)) + $"; GC pause total {GC.GetTotalPauseDuration()}; "
                  + _hub!.FormatRunInfo());
    }

    [Test]
    public void Parsing_a_crash_report_picks_the_thread_and_collapses_native_frames()
    {
        var json = """
            {"payload":{"threads":[
              {"native_thread_id":"0x10","stack_frames":[{"is_managed":"true","method_name":"Other.Method()","filename":"x.dll"}]},
              {"native_thread_id":"0x2a","stack_frames":[
                {"is_managed":"false","native_module":"libc.so.6"},
                {"is_managed":"false","native_module":"libc.so.6"},
                {"is_managed":"true","token":"0x0"},
                {"is_managed":"true","method_name":"App.Legacy.Block()","filename":"app.dll"}]}]}}
            """u8.ToArray();
        var (frames, failure) = ThreadStackCapture.ParseReport(json, 42);
        Assert.That(failure, Is.Null);
        Assert.That(frames, Is.EqualTo(new[] { "[native code: libc.so.6]", "[runtime stub]", "App.Legacy.Block() [app.dll]" }));
        Assert.That(ThreadStackCapture.ParseReport(json, 7).Item2, Does.Contain("no thread with OS id 7"));
    }

    [Test]
    public void ManyShortNonCooperativeBlocksBackToBackAreReportedAsStarvation()
    {
        var saved = StarvationWindow.ReportInterval;
        StarvationWindow.ReportInterval = TimeSpan.Zero;
        try
        {
            // 300 ms: samples every 75 ms (13 per 1 s window, above MinSamples), and far above what a 15 ms hold
            // takes even on a loaded machine, so no single hold is reported.
            CreateHub(TimeSpan.FromMilliseconds(300), captureStacks: false);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3);
            // Each hold (a real 15 ms sleep: this test project does not patch) is far below MaxBlockingTime.
            var workers = Enumerable.Range(0, 5).Select(i => Green.Spawn(() =>
            {
                while (DateTime.UtcNow < deadline)
                {
                    Thread.Sleep(15);
                    Green.Sleep(0);
                }
            }, $"legacy-{i}")).ToList();
            Green.JoinAll(workers);
            var starved = _logs.Entries.Where(e => e.EventId.Id == 16).ToList();
            Assert.That(starved, Is.Not.Empty, "back-to-back 15 ms blocks for 3 s starve the hub");
            Assert.That(starved[0].Message, Does.Contain("legacy-"));
            Assert.That(_logs.Entries.Where(e => e.EventId.Id is 10 or 11), Is.Empty, "no single hold was long enough to report");
        }
        finally
        {
            StarvationWindow.ReportInterval = saved;
        }
    }

    [Test]
    public void OneLongHoldIsReportedOnceAndNotAgainAsStarvationInTheWindowsItLastsInto()
    {
        var saved = StarvationWindow.ReportInterval;
        StarvationWindow.ReportInterval = TimeSpan.Zero; // every starved window would be reported
        try
        {
            CreateHub(TimeSpan.FromMilliseconds(300), captureStacks: false);
            // A ticker waits while one greenlet holds the baton 3.5 s in a real sleep (this test project does not
            // patch): one blocked episode, lasting into three more 1 s windows that are all blocked samples.
            var ticker = Green.Spawn(() => { for (int i = 0; i < 10; i++) Green.Sleep(5); }, "ticker");
            var holder = Green.Spawn(() => Thread.Sleep(3500), "long-hold");
            Green.JoinAll([ticker, holder]);
            Green.Sleep(1300); // the window the hold ended in closes (idle, so not starved either way)
            Assert.That(_logs.Entries.Where(e => e.EventId.Id is 10 or 11).Select(e => e.Message).ToList(), Has.Count.EqualTo(1).And.All.Contain("long-hold"));
            Assert.That(_logs.Entries.Where(e => e.EventId.Id == 16).Select(e => e.Message), Is.Empty,
                "the windows of an episode already reported are not reported again");
        }
        finally
        {
            StarvationWindow.ReportInterval = saved;
        }
    }

    [Test]
    public void GreenletsThatWaitCooperativelyAreNotReportedAsStarvation()
    {
        var saved = StarvationWindow.ReportInterval;
        StarvationWindow.ReportInterval = TimeSpan.Zero;
        try
        {
            CreateHub(TimeSpan.FromMilliseconds(100), captureStacks: false);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(2.5);
            var workers = Enumerable.Range(0, 5).Select(i => Green.Spawn(() =>
            {
                while (DateTime.UtcNow < deadline) Green.Sleep(15);
            })).ToList();
            Green.JoinAll(workers);
            Assert.That(_logs.Entries.Where(e => e.EventId.Id == 16), Is.Empty);
        }
        finally
        {
            StarvationWindow.ReportInterval = saved;
        }
    }

    [Test]
    public void HandOffsOnBusyCpusAreNotReportedAsStarvation()
    {
        // Greenlets that only yield hand the baton from carrier to carrier all the time; with every CPU kept busy by
        // plain threads, each carrier handed the baton waits a while for a CPU. The thread that handed it on is
        // asleep (parked) meanwhile, but it no longer holds the baton: that wait is CPU contention, not a call that
        // blocks, and must not be reported as one.
        var saved = StarvationWindow.ReportInterval;
        StarvationWindow.ReportInterval = TimeSpan.Zero;
        var stop = false;
        var burners = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => new Thread(() =>
        {
            while (!Volatile.Read(ref stop)) Thread.SpinWait(1000);
        }) { IsBackground = true }).ToList();
        try
        {
            CreateHub(TimeSpan.FromMilliseconds(300), captureStacks: false);
            burners.ForEach(t => t.Start());
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(2.5);
            var workers = Enumerable.Range(0, 8).Select(i => Green.Spawn(() =>
            {
                while (DateTime.UtcNow < deadline) Green.Sleep(0);
            }, $"yielder-{i}")).ToList();
            Green.JoinAll(workers);
            Assert.That(_hub!.GetRunInfo().Switches, Is.GreaterThan(1000), "the greenlets handed the baton around");
            Assert.That(_logs.Entries.Where(e => e.EventId.Id == 16).Select(e => e.Message), Is.Empty);
        }
        finally
        {
            Volatile.Write(ref stop, true);
            burners.ForEach(t => t.Join());
            StarvationWindow.ReportInterval = saved;
        }
    }
}
