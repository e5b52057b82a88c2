// The blocking monitor: gevent's "what is blocking my loop?", one background thread per hub.
//
// Glossary: baton epoch, blocked episode — see Scheduling/Hub.Diagnostics.cs.
//
// Protocol (Run), every interval = MaxBlockingTime / 4 (between 5 ms and 250 ms):
//   1. Sample the hub's baton epoch. A new epoch: start its clock at zero; if the previous epoch had been reported,
//      log that it ended (event 12). The same epoch: add the real time since the last sample, less the time the
//      process was frozen by stack captures (ThreadStackCapture.CaptureTicks) or paused by the GC
//      (GC.GetTotalPauseDuration) — every thread was stopped then, so the holder is not to blame — but never more
//      than this thread overslept its interval (it is frozen with the others).
//   2. Same epoch, hub not idle, not reported yet, seen for at least MaxBlockingTime, something else wants the
//      baton (Hub.ReadOthersWaiting), and a thread holds it (a baton handed to a carrier still waiting for a CPU has
//      no holder: that stall is CPU contention, which no greenlet causes): a blocked episode. Count it, capture the
//      holder thread's stack (ThreadStackCapture, unless disabled or rate-limited), log one warning (event 10 or 11)
//      and raise Hub.Blocked. The episode is reported once however long it lasts. A stack that stops in a runtime
//      stub before any named frame is retried once while the episode lasts; a stack whose top is the scheduler
//      (taken after the holder released the baton) is dropped with that reason.
//   3. Every sample also feeds the starvation window (StarvationWindow.cs): many holds each too short for step 2
//      that together starve the hub are reported once per window (event 16); the windows a reported episode lasts
//      into are not (NoteEpisode at the report, EndEpisode when its epoch ends).
// Invariant: at most one report per epoch (the `reported` flag is cleared only when the epoch changes).
// Cost: a sample is a few field reads and no allocation; the thread sleeps on a ManualResetEventSlim between
// samples. Time is real time (Stopwatch), not HubOptions.TimeProvider: a blocked thread blocks in real time.
// An epoch held for half of MaxBlockingTime while others wait warms the stack capture up, once per process and in the
// background (ThreadStackCapture.WarmUpInBackground), so that the first capture starts fast.
// The monitor holds the hub only weakly and stops when the hub is disposed (or collected undisposed).

using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Diagnostics;

/// <summary>Watches one hub for greenlets that keep the baton too long. See the header comment.</summary>
internal sealed class BlockingMonitor
{
    /// <summary>Minimum time between two stack captures in the process: each one pauses the process for ~0.5 s.
    /// Tests lower it.</summary>
    internal static TimeSpan MinCaptureInterval = TimeSpan.FromSeconds(10);

    /// <summary>How long createdump may take before it is killed.</summary>
    internal static TimeSpan CaptureTimeout = TimeSpan.FromSeconds(10);

    private static long s_lastCapture = long.MinValue / 2;

    private readonly WeakReference<Hub> _hub;
    private readonly string _hubName;
    private readonly ILogger _logger;
    private readonly long _maxTicks;
    private readonly int _intervalMs;
    private readonly long _intervalTicks;
    private readonly bool _captureStacks;
    // No spinning: nearly every wait runs to its timeout, and the default spin before each would cost ~25 sched_yield
    // calls per sample interval for nothing (40 intervals a second at the default MaxBlockingTime).
    private readonly ManualResetEventSlim _stop = new(false, spinCount: 0);
    private readonly StarvationWindow _starvation = new();

    private BlockingMonitor(Hub hub, TimeSpan max)
    {
        _hub = new WeakReference<Hub>(hub);
        _hubName = hub.ToString();
        _logger = hub.Logger;
        _maxTicks = (long)(max.TotalSeconds * Stopwatch.Frequency);
        _intervalMs = (int)Math.Clamp(max.TotalMilliseconds / 4, 5, 250);
        _intervalTicks = _intervalMs * Stopwatch.Frequency / 1000;
        _captureStacks = hub.Options.CaptureBlockedStacks;
    }

    public static BlockingMonitor Start(Hub hub, TimeSpan max)
    {
        var monitor = new BlockingMonitor(hub, max);
        var thread = new Thread(monitor.Run, 256 * 1024) { IsBackground = true, Name = $"GreenRuntime monitor {hub}" };
        Scheduling.RuntimeThread.Start(thread);
        return monitor;
    }

    /// <summary>Asks the thread to end. It does not wait: a capture in progress finishes on its own.</summary>
    public void Stop() => _stop.Set();

    private void Run()
    {
        long epoch = -1, held = 0, lastSample = Stopwatch.GetTimestamp(), reportedAt = 0, heldAtReport = 0, lastReportedEpoch = -1;
        long lastCapture = ThreadStackCapture.CaptureTicks(lastSample);
        long lastGcPause = GcPauseTicks();
        bool reported = false, endUncertain = false;
        string? reportedHolder = null;
        while (!_stop.Wait(_intervalMs))
        {
            if (!_hub.TryGetTarget(out var hub) || hub.IsDisposed)
                break;
            try
            {
                long now = Stopwatch.GetTimestamp();
                // Real time since the last sample, less the time the process was frozen by a stack capture or paused
                // by the GC (all threads stopped: the holder could not have yielded either). A capture's duration also
                // covers time in which the process ran (createdump starting, the report being read), so what is
                // discounted is at most how late this thread woke up: it was frozen too.
                long capture = ThreadStackCapture.CaptureTicks(now), gcPause = GcPauseTicks();
                long gap = now - lastSample;
                long stopped = Math.Min((capture - lastCapture) + (gcPause - lastGcPause), Math.Max(0, gap - _intervalTicks));
                long step = gap - stopped;
                lastSample = now;
                lastCapture = capture;
                lastGcPause = gcPause;
                long current = hub.ReadBatonEpoch();
                if (_starvation.Sample(hub, now) is { } starved)
                    Log.HubStarved(_logger, _hubName, starved.Percent, starved.WindowMs, starved.Holders);
                if (current != epoch)
                {
                    if (reported)
                    {
                        _starvation.EndEpisode();
                        // After a capture the monitor looks again only once it is done, so only a bound is known:
                        // the episode ended between the report and now.
                        if (endUncertain)
                            Log.HubUnblocked(_logger, reportedHolder!, _hubName, "at most", TicksToMs(heldAtReport + now - reportedAt));
                        else
                            Log.HubUnblocked(_logger, reportedHolder!, _hubName, "about", TicksToMs(held + step));
                    }
                    epoch = current;
                    held = 0;
                    reported = false;
                    continue;
                }
                held += step;
                if (reported || hub.ReadIdle())
                    continue;
                if (held >= _intervalTicks && hub.ReadOthersWaiting(hub.ReadBatonGreenlet()))
                    hub.AskToYield(epoch); // for a holder whose calls never wait (Hub.GiveWay); reported below if it does not

                if (held < _maxTicks)
                {
                    // Suspicious: warm the capture up now (once per process, in the background) so that a first
                    // capture starts fast. Not at start-up: spawning a process then slows every program's start.
                    if (_captureStacks && held >= _maxTicks / 2 && IsRead(hub) && hub.ReadOthersWaiting(hub.ReadBatonGreenlet()))
                        ThreadStackCapture.WarmUpInBackground();
                    continue;
                }
                var holder = hub.ReadBatonGreenlet();
                if (!hub.ReadOthersWaiting(holder) || hub.ReadBatonHolderOsThread() == 0)
                    continue; // nobody waits; or the baton is in transit (the CPUs are busy), which no greenlet causes
                reported = true;
                _starvation.NoteEpisode();
                reportedHolder = holder == hub.HubGreenlet ? "a hub callback" : holder.ToString();
                AssertFirstReportOfEpoch(epoch, ref lastReportedEpoch);
                reportedAt = now;
                heldAtReport = held;
                endUncertain = Report(hub, holder, epoch, held);
            }
            catch (Exception e)
            {
                // The monitor must never take the process down; a failure costs one report at most.
                Log.MonitorFailed(_logger, e, _hubName);
            }
        }
        // _stop is not disposed: Stop may still be called after this thread ended (it has no kernel handle to free).
    }

    /// <returns>Whether a stack capture was attempted (the monitor was then not sampling for a while).</returns>
    private bool Report(Hub hub, Greenlet holder, long epoch, long heldTicks)
    {
        hub.NoteBlockedEpisode();
        bool isCallback = holder == hub.HubGreenlet;
        string holderName = isCallback ? "a hub callback" : holder.ToString();
        int osThread = hub.ReadBatonHolderOsThread();

        string? stack = null, reason = null;
        bool certain = false;
        var duration = TimeSpan.Zero;
        if (!_captureStacks)
        {
            reason = "stack capture is off (HubOptions.CaptureBlockedStacks = false)";
        }
        else if (!IsRead(hub))
        {
            // A capture freezes the whole process for 0.5 s or more: never for a report that goes nowhere.
            reason = "nothing reads the report (no logger enabled for warnings, no Hub.Blocked handler)";
        }
        else if (osThread == 0)
        {
            reason = "no thread held the baton: it was handed to a carrier thread that the OS had not run yet (the CPUs were busy)";
        }
        else if (hub.ReadBatonEpoch() != epoch)
        {
            // The thread read above may already run the next holder: its stack would be shown under this one's name.
            reason = "the greenlet released the baton before the snapshot was taken";
        }
        else if (!TryClaimCaptureSlot(out var sinceLast))
        {
            reason = $"the last stack capture in this process was {sinceLast.TotalSeconds:F1} s ago; captures pause the process for about 0.5 s, so at most one is made per {MinCaptureInterval.TotalSeconds:F0} s";
        }
        else
        {
            var result = ThreadStackCapture.Capture(osThread, CaptureTimeout);
            duration = result.Duration;
            if (result.Frames is { } first && !HasNamedManagedFrame(first) && hub.ReadBatonEpoch() == epoch)
            {
                // The thread was stopped inside a runtime stub (e.g. a P/Invoke transition) and the walk ended there;
                // it still blocks, so one more snapshot almost always lands in user code.
                var retry = ThreadStackCapture.Capture(osThread, CaptureTimeout);
                duration += retry.Duration;
                if (retry.Frames is { } second && HasNamedManagedFrame(second)) result = retry;
            }
            if (result.Frames is { } stub && !HasNamedManagedFrame(stub))
            {
                reason = "the stack walk stopped in a runtime stub before reaching managed code (" + string.Join(" <- ", stub) + ")";
            }
            else if (result.Frames is { } frames)
            {
                certain = hub.ReadBatonEpoch() == epoch;
                if (!certain && ShowsScheduler(frames))
                    reason = "the greenlet released the baton before the snapshot was taken";
                else
                    stack = ThreadStackCapture.Format(frames);
            }
            else
            {
                reason = result.Failure;
            }
        }

        var report = new HubBlockedReport
        {
            HubId = hub.Id,
            Greenlet = isCallback ? null : holder,
            Holder = holderName,
            BlockedFor = TimeSpan.FromSeconds(heldTicks / (double)Stopwatch.Frequency),
            OsThreadId = Math.Max(0, osThread),
            StackTrace = stack,
            StackUnavailableReason = reason,
            StackCertain = certain,
            CaptureDuration = duration,
            DetectedAt = DateTimeOffset.UtcNow,
        };
        long ms = TicksToMs(heldTicks);
        if (stack != null)
        {
            var note = certain ? "" : "; it released the baton while the capture finished";
            Log.HubBlocked(_logger, holderName, _hubName, ms, note, stack);
        }
        else
        {
            Log.HubBlockedWithoutStack(_logger, holderName, _hubName, ms, reason!);
        }
        hub.RaiseBlocked(report);
        return duration > TimeSpan.Zero;
    }

    /// <summary>Whether a report would reach anyone: a logger enabled for warnings, or a <see cref="Hub.Blocked"/> handler.</summary>
    private bool IsRead(Hub hub) => _logger.IsEnabled(LogLevel.Warning) || hub.HasBlockedHandlers;

    /// <summary>A stack whose innermost managed frame is the scheduler's park belongs to a thread that had already
    /// given the baton away: it says nothing about the episode.</summary>
    private static bool ShowsScheduler(IReadOnlyList<string> frames)
    {
        foreach (var frame in frames)
        {
            if (frame.StartsWith('[')) continue;
            return frame.StartsWith("GreenRuntime.Scheduling.Parker.", StringComparison.Ordinal)
                   || frame.StartsWith("GreenRuntime.Hub.IdleWait", StringComparison.Ordinal)
                   || frame.StartsWith("GreenRuntime.Scheduling.Carrier.PoolLoop", StringComparison.Ordinal);
        }
        return false;
    }

    [Conditional("DEBUG")]
    private static void AssertFirstReportOfEpoch(long epoch, ref long lastReportedEpoch)
    {
        if (epoch == lastReportedEpoch)
            throw new InvalidOperationException($"Invariant broken: the blocking monitor reported baton epoch {epoch} twice; an episode is reported once.");
        lastReportedEpoch = epoch;
    }

    private static long GcPauseTicks() => (long)(GC.GetTotalPauseDuration().TotalSeconds * Stopwatch.Frequency);

    private static bool HasNamedManagedFrame(IReadOnlyList<string> frames)
    {
        foreach (var frame in frames)
            if (!frame.StartsWith('[')) return true;
        return false;
    }

    private static bool TryClaimCaptureSlot(out TimeSpan sinceLast)
    {
        long now = Stopwatch.GetTimestamp();
        long last = Interlocked.Read(ref s_lastCapture);
        sinceLast = TimeSpan.FromSeconds((now - last) / (double)Stopwatch.Frequency);
        if (sinceLast < MinCaptureInterval)
            return false;
        return Interlocked.CompareExchange(ref s_lastCapture, now, last) == last;
    }

    private static long TicksToMs(long ticks) => ticks * 1000 / Stopwatch.Frequency;
}
