using System.Runtime.ExceptionServices;

namespace GreenRuntime;

public partial class GreenGroup
{
    /// <summary>
    /// Runs <paramref name="func"/> on every item in a member greenlet (stackful) and returns the results in input
    /// order. On a <see cref="GreenPool"/> at most <see cref="GreenPool.Size"/> run at once.
    /// </summary>
    /// <remarks>The first failure in input order is rethrown (after the items before it completed); the other
    /// items keep running.</remarks>
    public IReadOnlyList<TOut> Map<TIn, TOut>(Func<TIn, TOut> func, IEnumerable<TIn> items) => IMap(func, items).ToList();

    /// <summary>The stackless form of <see cref="Map{TIn, TOut}(Func{TIn, TOut}, IEnumerable{TIn})"/>: each item runs in a stackless member.</summary>
    public IReadOnlyList<TOut> Map<TIn, TOut>(Func<TIn, Task<TOut>> func, IEnumerable<TIn> items) => IMap(func, items).ToList();

    /// <summary>
    /// Like <see cref="Map{TIn, TOut}(Func{TIn, TOut}, IEnumerable{TIn})"/>, but lazy: yields each result in input
    /// order as soon as it and all before it are done. A failed item rethrows when the enumeration reaches it; the
    /// others keep running.
    /// </summary>
    /// <param name="func">The work per item.</param>
    /// <param name="items">The inputs; enumerated by a feeder greenlet as slots become free.</param>
    /// <param name="maxSize">At most this many results started but not yet yielded (bounds the buffer); null for no bound.</param>
    /// <remarks>Leaving the enumeration early stops the feeder (no new items start); items already running finish.</remarks>
    public IEnumerable<TOut> IMap<TIn, TOut>(Func<TIn, TOut> func, IEnumerable<TIn> items, int? maxSize = null)
    {
        ArgumentNullException.ThrowIfNull(func);
        return MapCore(items, x => Spawn(() => func(x)), ordered: true, maxSize);
    }

    /// <summary>The stackless form of <see cref="IMap{TIn, TOut}(Func{TIn, TOut}, IEnumerable{TIn}, int?)"/>.</summary>
    public IEnumerable<TOut> IMap<TIn, TOut>(Func<TIn, Task<TOut>> func, IEnumerable<TIn> items, int? maxSize = null)
    {
        ArgumentNullException.ThrowIfNull(func);
        return MapCore(items, x => SpawnAsync(() => func(x)), ordered: true, maxSize);
    }

    /// <summary>
    /// Like <see cref="IMap{TIn, TOut}(Func{TIn, TOut}, IEnumerable{TIn}, int?)"/>, but yields results in the order
    /// they complete. A failed item rethrows when the enumeration reaches it; the others keep running.
    /// </summary>
    /// <param name="func">The work per item.</param>
    /// <param name="items">The inputs.</param>
    /// <param name="maxSize">At most this many results started but not yet yielded; null for no bound.</param>
    public IEnumerable<TOut> IMapUnordered<TIn, TOut>(Func<TIn, TOut> func, IEnumerable<TIn> items, int? maxSize = null)
    {
        ArgumentNullException.ThrowIfNull(func);
        return MapCore(items, x => Spawn(() => func(x)), ordered: false, maxSize);
    }

    /// <summary>The stackless form of <see cref="IMapUnordered{TIn, TOut}(Func{TIn, TOut}, IEnumerable{TIn}, int?)"/>.</summary>
    public IEnumerable<TOut> IMapUnordered<TIn, TOut>(Func<TIn, Task<TOut>> func, IEnumerable<TIn> items, int? maxSize = null)
    {
        ArgumentNullException.ThrowIfNull(func);
        return MapCore(items, x => SpawnAsync(() => func(x)), ordered: false, maxSize);
    }

    /// <summary>
    /// Runs <paramref name="func"/> in a member and returns its result (gevent's <c>apply</c>). Called from a member of
    /// this group it runs inline, so a member cannot deadlock a full pool by applying.
    /// </summary>
    public T Apply<T>(Func<T> func)
    {
        ArgumentNullException.ThrowIfNull(func);
        if (Contains(Hub.Current.CurrentGreenlet)) return func();
        return Spawn(func).Get();
    }

    /// <summary>
    /// Runs <paramref name="func"/> in a member and returns a greenlet for its result at once, never blocking the caller
    /// (gevent's <c>apply_async</c>); <paramref name="callback"/>, if given, runs with the result.
    /// </summary>
    /// <remarks>On a pool with a free slot the returned greenlet is the member itself. On a full pool it is a greenlet
    /// outside the pool that waits for a slot, runs <paramref name="func"/> in a member and returns its result (as
    /// gevent does), so the caller never waits. The callback runs in the member greenlet, so it may block; if it
    /// throws, the member fails with that exception.</remarks>
    public Greenlet<T> ApplyAsync<T>(Func<T> func, Action<T>? callback = null)
    {
        ArgumentNullException.ThrowIfNull(func);
        if (this is GreenPool { IsFull: true })
            return Green.Spawn(() => SpawnApplied(func, callback).Get()!); // waits for the slot there, not here
        return SpawnApplied(func, callback);
    }

    /// <summary>Spawns the member of <see cref="ApplyAsync{T}"/> (waiting for a slot on a full pool).</summary>
    private Greenlet<T> SpawnApplied<T>(Func<T> func, Action<T>? callback) =>
        Spawn(() =>
        {
            var result = func();
            callback?.Invoke(result);
            return result;
        });

    private readonly record struct Completion<TOut>(int Index, Greenlet<TOut>? Greenlet, int Total, ExceptionDispatchInfo? FeederError);

    private IEnumerable<TOut> MapCore<TIn, TOut>(IEnumerable<TIn> items, Func<TIn, Greenlet<TOut>> spawn, bool ordered, int? maxSize)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (maxSize is < 1) throw new ArgumentOutOfRangeException(nameof(maxSize), maxSize, "maxSize must be at least 1, or null.");
        return MapIterator(items, spawn, ordered, maxSize);
    }

    private IEnumerable<TOut> MapIterator<TIn, TOut>(IEnumerable<TIn> items, Func<TIn, Greenlet<TOut>> spawn, bool ordered, int? maxSize)
    {
        var completions = new GreenQueue<Completion<TOut>>();
        var window = maxSize is { } m ? new GreenSemaphore(m) : null;
        // The feeder spawns one member per item, waiting for pool slots and for the window; each member's death
        // link reports its completion. It is a separate greenlet so the consumer can yield results meanwhile.
        var feeder = new Greenlet(() =>
        {
            int index = 0;
            try
            {
                foreach (var item in items)
                {
                    window?.Acquire();
                    int i = index++;
                    var g = spawn(item);
                    g.AddLink(done => completions.Put(new Completion<TOut>(i, (Greenlet<TOut>)done, 0, null)), LinkKind.All);
                }
                completions.Put(new Completion<TOut>(-1, null, index, null));
            }
            catch (Exception e) when (e is not GreenletExit)
            {
                completions.Put(new Completion<TOut>(-1, null, index, ExceptionDispatchInfo.Capture(e)));
            }
        }, "map-feeder");
        feeder.Start();
        try
        {
            int total = -1, yielded = 0, next = 0;
            var early = ordered ? new Dictionary<int, Greenlet<TOut>>() : null;
            while (total < 0 || yielded < total)
            {
                var c = completions.Get();
                if (c.Greenlet == null)
                {
                    c.FeederError?.Throw();
                    total = c.Total;
                    continue;
                }
                if (early == null)
                {
                    yielded++;
                    window?.Release();
                    yield return c.Greenlet.Get();
                    continue;
                }
                early[c.Index] = c.Greenlet;
                while (early.Remove(next, out var g))
                {
                    next++;
                    yielded++;
                    window?.Release();
                    yield return g.Get();
                }
            }
        }
        finally
        {
            if (!feeder.Dead) feeder.Kill(block: false);
        }
    }
}
