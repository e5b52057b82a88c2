using GreenRuntime.Scheduling;
using GreenRuntime.Sync;

namespace GreenRuntime;

public static partial class Green
{
    /// <summary>
    /// Yields the waitables (greenlets, events, async results, or any <see cref="IGreenWaitable"/> of yours) as they become ready, in the order they did — those
    /// ready already come first, in input order (gevent's <c>iwait</c>). Hub-only; enumerating blocks.
    /// </summary>
    /// <param name="waitables">What to wait for (duplicates count once).</param>
    /// <param name="timeout">An overall limit from the first <c>MoveNext</c>: when it passes, the enumeration ends.</param>
    /// <param name="count">End after this many.</param>
    /// <remarks>Each object is yielded at most once, when it first becomes ready (an event set, cleared and set again
    /// counts once). The code between two yields may block; readiness meanwhile is recorded, not missed.</remarks>
    /// <example><code>foreach (var g in Green.IWait(greenlets)) Console.WriteLine(g.Value);</code></example>
    public static IEnumerable<T> IWait<T>(IEnumerable<T> waitables, TimeSpan? timeout = null, int? count = null) where T : IGreenWaitable
    {
        ArgumentNullException.ThrowIfNull(waitables);
        Blocking.ValidateTimeout(timeout);
        if (count is < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must not be negative.");
        var list = waitables.Distinct().ToList();
        foreach (var w in list)
        {
            if (w is null) throw new ArgumentNullException(nameof(waitables), "IWait got a null waitable.");
        }
        return IWaitIterator(list, timeout, Math.Min(count ?? list.Count, list.Count));
    }

    private static IEnumerable<T> IWaitIterator<T>(List<T> list, TimeSpan? timeout, int wanted) where T : IGreenWaitable
    {
        var hub = Hub.Current;
        var ready = new Queue<T>();
        WakeToken? parked = null;
        bool timedOut = false;
        var subscriptions = new List<IDisposable>();
        HubTimer? timer = null;
        try
        {
            foreach (var w in list)
            {
                if (w.Ready)
                {
                    ready.Enqueue(w);
                    continue;
                }
                bool seen = false;
                void OnReadyOnHub()
                {
                    if (seen) return; // each object is yielded at most once
                    seen = true;
                    ready.Enqueue(w);
                    if (parked is { } t) hub.TryWake(t);
                }
                // A user's waitable may report from any thread: the bookkeeping above is hub-only.
                subscriptions.Add(w.Subscribe(() =>
                {
                    if (hub.IsOnHubThread) OnReadyOnHub();
                    else if (!hub.IsClosed) hub.PostAction(OnReadyOnHub);
                }));
            }
            if (Blocking.IsFinite(timeout))
            {
                timer = hub.AddTimer(timeout!.Value, _ =>
                {
                    timedOut = true;
                    if (parked is { } t) hub.TryWake(t);
                }, null);
            }
            int yielded = 0;
            while (yielded < wanted)
            {
                if (ready.Count == 0)
                {
                    if (timedOut) yield break;
                    var token = hub.BeginPark(WaitReason.Event);
                    parked = token;
                    try
                    {
                        hub.EndPark(token);
                    }
                    finally
                    {
                        parked = null;
                    }
                    continue;
                }
                yielded++;
                yield return ready.Dequeue();
            }
        }
        finally
        {
            timer?.Cancel();
            foreach (var s in subscriptions) s.Dispose();
        }
    }
}
