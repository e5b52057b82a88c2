// Metrics: the "GreenRuntime" Meter (System.Diagnostics.Metrics), readable with
// `dotnet-counters monitor --counters GreenRuntime -p PID`, OpenTelemetry's AddMeter("GreenRuntime"), or a MeterListener.
//
// Design chosen: every instrument is Observable. The hub counts with plain field increments on its baton
// (Scheduling/Hub.Diagnostics.cs); the instruments' callbacks sum those fields over the live hubs when a listener
// polls (dotnet-counters: once per refresh interval). The hot path never calls into System.Diagnostics.Metrics.
// Counts of disposed hubs are folded into process-wide totals at Dispose, so counters never go backwards.
// Rejected: Counter<T>.Add per event (a call and an enabled-check on every switch, and cross-hub contention if
// it were one shared field); per-hub Meters (tools would see one series per hub with no name to tell them apart).

using System.Diagnostics.Metrics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Diagnostics;

/// <summary>The process-wide <c>GreenRuntime</c> meter and its instruments. See the header comment.</summary>
internal static class GreenMetrics
{
    public const string MeterName = "GreenRuntime";

    private static readonly object s_lock = new();
    private static readonly List<WeakReference<Hub>> s_hubs = new();
    private static long s_retiredSpawned, s_retiredFinished, s_retiredFailed, s_retiredSwitches, s_retiredBlocked;
    private static readonly long[] s_retiredWaits = new long[Hub.WaitReasonCount];
    private static readonly KeyValuePair<string, object?>[][] s_reasonTags = Enum.GetValues<WaitReason>()
        .Select(r => new[] { new KeyValuePair<string, object?>("reason", r.ToString().ToLowerInvariant()) }).ToArray();

    public static readonly Meter Meter = new(MeterName, typeof(Hub).Assembly.GetName().Version?.ToString());

    static GreenMetrics()
    {
        Meter.CreateObservableCounter("greenruntime.greenlets.spawned", () => Sum(static () => s_retiredSpawned, static h => h.ReadSpawned()),
            "{greenlet}", "Greenlets started (stackful and stackless).");
        Meter.CreateObservableCounter("greenruntime.greenlets.finished", () => Sum(static () => s_retiredFinished, static h => h.ReadFinished()),
            "{greenlet}", "Started greenlets that finished, however they finished (including failed and killed ones).");
        Meter.CreateObservableCounter("greenruntime.greenlets.failed", () => Sum(static () => s_retiredFailed, static h => h.ReadFailed()),
            "{greenlet}", "Greenlets that ended with an exception other than GreenletExit.");
        Meter.CreateObservableUpDownCounter("greenruntime.greenlets.alive", () => Sum(static () => 0, static h => h.ReadAlive()),
            "{greenlet}", "Greenlets started and not finished, over every hub.");
        Meter.CreateObservableCounter("greenruntime.switches", () => Sum(static () => s_retiredSwitches, static h => h.ReadSwitches()),
            "{switch}", "Times a greenlet got the baton (resumed, started, or ran a stackless continuation).");
        Meter.CreateObservableUpDownCounter("greenruntime.carriers.busy", static () => Carriers(busy: true),
            "{thread}", "Carrier threads out of the pool: keeping a suspended greenlet's stack or running hub code.");
        Meter.CreateObservableUpDownCounter("greenruntime.carriers.idle", static () => Carriers(busy: false),
            "{thread}", "Carrier threads parked in the pool.");
        Meter.CreateObservableCounter("greenruntime.carriers.created", CarriersCreated,
            "{thread}", "Carrier threads made, tagged by how: on_demand (a hub waited for it), refill (the pool's refill thread, beside the hubs) or prestart (HubOptions.PrestartCarriers, and two per hub).");
        Meter.CreateObservableCounter("greenruntime.waits", Waits,
            "{wait}", "Cooperative waits (parks), tagged by reason: sleep, socket, dns, file, task, thread, join, event, queue, lock, yield, switch, other.");
        Meter.CreateObservableCounter("greenruntime.hub.blocked", () => Sum(static () => s_retiredBlocked, static h => h.ReadBlockedEpisodes()),
            "{episode}", "Episodes in which one greenlet or callback held a hub's baton longer than MaxBlockingTime.");
        Meter.CreateObservableUpDownCounter("greenruntime.timers", () => Sum(static () => 0, static h => h.ReadTimerCount()),
            "{timer}", "Timers pending in every hub's heap (sleeps, timeouts, SpawnLater, callbacks).");
    }

    /// <summary>Makes the hub's counts visible. Called by the hub's constructor (this also creates the meter).</summary>
    public static void Register(Hub hub)
    {
        lock (s_lock) s_hubs.Add(new WeakReference<Hub>(hub));
    }

    /// <summary>Folds a disposed hub's counts into the totals and forgets it.</summary>
    public static void Unregister(Hub hub)
    {
        lock (s_lock)
        {
            s_hubs.RemoveAll(w => !w.TryGetTarget(out var h) || h == hub);
            s_retiredSpawned += hub.ReadSpawned();
            s_retiredFinished += hub.ReadFinished();
            s_retiredFailed += hub.ReadFailed();
            s_retiredSwitches += hub.ReadSwitches();
            s_retiredBlocked += hub.ReadBlockedEpisodes();
            foreach (var reason in Enum.GetValues<WaitReason>())
                s_retiredWaits[(int)reason] += hub.ReadWaits(reason);
        }
    }

    private static long Sum(Func<long> retired, Func<Hub, long> read)
    {
        lock (s_lock)
        {
            long total = retired();
            foreach (var w in s_hubs)
                if (w.TryGetTarget(out var hub)) total += read(hub);
            return total;
        }
    }

    private static int Carriers(bool busy)
    {
        int total = 0;
        foreach (var pool in CarrierPool.All())
        {
            int idle = pool.Idle;
            total += busy ? Math.Max(0, pool.Created - idle) : idle;
        }
        return total;
    }

    private static readonly KeyValuePair<string, object?>[] s_onDemandTag = [new("made", "on_demand")],
        s_refillTag = [new("made", "refill")], s_prestartTag = [new("made", "prestart")];

    private static Measurement<long>[] CarriersCreated()
    {
        long onDemand = 0, refill = 0, prestart = 0;
        foreach (var pool in CarrierPool.All())
        {
            onDemand += pool.MadeOnDemand;
            refill += pool.MadeByRefill;
            prestart += pool.Prestarted;
        }
        return [new(onDemand, s_onDemandTag), new(refill, s_refillTag), new(prestart, s_prestartTag)];
    }

    private static IEnumerable<Measurement<long>> Waits()
    {
        var result = new Measurement<long>[Hub.WaitReasonCount - 1];
        lock (s_lock)
        {
            foreach (var reason in Enum.GetValues<WaitReason>())
            {
                if (reason == WaitReason.None) continue;
                long total = s_retiredWaits[(int)reason];
                foreach (var w in s_hubs)
                    if (w.TryGetTarget(out var hub)) total += hub.ReadWaits(reason);
                result[(int)reason - 1] = new Measurement<long>(total, s_reasonTags[(int)reason]);
            }
        }
        return result;
    }
}
