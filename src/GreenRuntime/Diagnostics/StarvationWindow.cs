using System.Diagnostics;
using System.Globalization;

namespace GreenRuntime.Diagnostics;

/// <summary>
/// The blocking monitor's second question: is the hub starved by many holds of the baton that are each too short
/// to report (every greenlet blocking 15 ms in a call that is not cooperative, back to back)?
/// </summary>
/// <remarks>
/// Statistical, by the monitor's own samples: a sample counts as <em>blocked</em> when the hub is not idle, another
/// greenlet wants the baton, and the holder's thread is asleep in the kernel (state S or D in
/// <c>/proc/self/task/TID/stat</c>: a wait, not computation) while it keeps the baton. A baton in transit (handed to a
/// carrier the OS has not run yet) has no holder: that is CPU contention, not a blocking call, and does not count.
/// When blocked samples are more than half of a window
/// (at least <see cref="MinSamples"/> samples), one warning names the share and the greenlets that held the baton
/// in most blocked samples. Windows in which a single hold was reported as a blocked episode are not reported
/// again. At most one report per <see cref="ReportInterval"/>. Cost: a few field reads per sample, plus one small
/// /proc read when the hub is busy.
/// </remarks>
internal sealed class StarvationWindow
{
    /// <summary>The window over which the share of blocked samples is judged.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromSeconds(1);

    /// <summary>Fewer samples than this in a window say nothing.</summary>
    public const int MinSamples = 8;

    /// <summary>At most one starvation report per this interval.</summary>
    internal static TimeSpan ReportInterval = TimeSpan.FromSeconds(10);

    private readonly Dictionary<string, int> _holders = new();
    private long _windowStart = Stopwatch.GetTimestamp();
    private long _lastReport = long.MinValue / 2;
    private int _samples, _blocked;
    private bool _episodeInWindow, _episodeOngoing;

    /// <summary>A blocked episode was reported: this window, and every later one it lasts into, is not reported again.</summary>
    public void NoteEpisode() => _episodeInWindow = _episodeOngoing = true;

    /// <summary>The reported episode ended (the baton moved): windows from the next one on are judged again.</summary>
    public void EndEpisode() => _episodeOngoing = false;

    /// <summary>Adds one sample; returns a report to log when the window just closed starved, else null.</summary>
    public (int Percent, int WindowMs, string Holders)? Sample(Hub hub, long now)
    {
        _samples++;
        var holder = hub.ReadBatonGreenlet();
        if (!hub.ReadIdle() && hub.ReadOthersWaiting(holder) && HolderAsleep(hub))
        {
            _blocked++;
            string name = holder == hub.HubGreenlet ? "a hub callback" : holder.ToString();
            _holders[name] = _holders.GetValueOrDefault(name) + 1;
        }
        long elapsed = now - _windowStart;
        if (elapsed < Window.TotalSeconds * Stopwatch.Frequency)
            return null;

        (int, int, string)? report = null;
        bool due = now - _lastReport >= ReportInterval.TotalSeconds * Stopwatch.Frequency;
        if (_samples >= MinSamples && _blocked * 2 > _samples && !_episodeInWindow && due)
        {
            var top = _holders.OrderByDescending(h => h.Value).Take(5)
                .Select(h => string.Create(CultureInfo.InvariantCulture, $"{h.Key} ({h.Value * 100 / _samples}%)"));
            report = (_blocked * 100 / _samples, (int)(elapsed * 1000 / Stopwatch.Frequency), string.Join(", ", top));
            _lastReport = now;
        }
        _windowStart = now;
        _samples = _blocked = 0;
        // One hold reported once (event 10) filled every later window it lasted into with blocked samples: each was
        // reported again as starvation, every ReportInterval, for as long as the hold went on.
        _episodeInWindow = _episodeOngoing;
        _holders.Clear();
        return report;
    }

    /// <summary>Whether the thread holding the baton sleeps in the kernel, and held it all the while this was read: a
    /// holder that handed the baton on meanwhile parked for that reason (a hand-off, not a blocking call), and while the
    /// baton is in transit no thread holds it (its id reads 0).</summary>
    private static bool HolderAsleep(Hub hub)
    {
        long epoch = hub.ReadBatonEpoch();
        int tid = hub.ReadBatonHolderOsThread();
        return IsAsleep(tid) && hub.ReadBatonEpoch() == epoch && hub.ReadBatonHolderOsThread() == tid;
    }

    /// <summary>Whether Linux thread <paramref name="tid"/> of this process sleeps in the kernel (S or D).</summary>
    private static bool IsAsleep(int tid)
    {
        if (tid <= 0 || !OperatingSystem.IsLinux()) return false;
        try
        {
            var stat = File.ReadAllText($"/proc/self/task/{tid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] is 'S' or 'D';
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // the thread ended
        }
    }
}
