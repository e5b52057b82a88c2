using System.Runtime.ExceptionServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

/// <summary>
/// The gevent-style entry points: spawn greenlets on the calling thread's hub, sleep, yield, join and wait
/// cooperatively.
/// </summary>
/// <example>
/// <code>
/// var a = Green.Spawn(() => { Green.Sleep(100); Console.WriteLine("a"); });
/// var b = Green.Spawn(() => Console.WriteLine("b"));
/// Green.JoinAll([a, b]);   // prints b, then a
/// </code>
/// </example>
public static partial class Green
{
    /// <summary>Creates and starts a stackful greenlet running <paramref name="body"/> (after those already scheduled).</summary>
    public static Greenlet Spawn(Action body, string? name = null)
    {
        var g = new Greenlet(body, name);
        g.Start();
        return g;
    }

    /// <summary>Creates and starts a stackful greenlet whose result is <paramref name="body"/>'s value.</summary>
    /// <exception cref="ArgumentException"><paramref name="body"/> returns a task (an async lambda): use <see cref="SpawnAsync{T}(Func{Task{T}}, string?)"/>.</exception>
    public static Greenlet<T> Spawn<T>(Func<T> body, string? name = null)
    {
        var g = new Greenlet<T>(body, name);
        g.Start();
        return g;
    }

    /// <summary>Creates and starts a stackless greenlet: <paramref name="body"/> runs on the hub and its continuations are posted back to it.</summary>
    /// <remarks>A body that throws before returning its task is a failed greenlet, exactly like a stackful one.
    /// Cooperative blocking calls (<see cref="Sleep(TimeSpan)"/>, <see cref="Wait(Task, TimeSpan?)"/>) inside it still work: the greenlet then keeps
    /// the current thread as its carrier while the hub moves on.
    /// <para>The stackless forms have their own name because C# binds a lambda whose end cannot be reached
    /// (<c>() =&gt; { while (true) { ... } }</c>, <c>() =&gt; throw ...</c>) to a <c>Func&lt;Task&gt;</c> overload rather than
    /// an <see cref="Action"/> one: with both named <c>Spawn</c>, such a worker loop became stackless by accident.</para></remarks>
    public static Greenlet SpawnAsync(Func<Task> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        var g = Greenlet.CreateStackless(body, name);
        g.Start();
        return g;
    }

    /// <summary>Creates and starts a stackless greenlet whose result is the task's result.</summary>
    public static Greenlet<T> SpawnAsync<T>(Func<Task<T>> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        var g = Greenlet<T>.CreateStackless(body, name);
        g.Start();
        return g;
    }

    /// <summary>Creates a stackful greenlet that starts after <paramref name="delay"/>.</summary>
    public static Greenlet SpawnLater(TimeSpan delay, Action body, string? name = null)
    {
        var g = new Greenlet(body, name);
        g.StartLater(delay);
        return g;
    }

    /// <summary>The greenlet running now: the thread's main greenlet when no spawned greenlet runs, the hub greenlet inside callbacks.</summary>
    public static Greenlet Current => Hub.Current.CurrentGreenlet;

    /// <summary>Suspends the current greenlet for <paramref name="delay"/> while others run. <c>Sleep(0)</c> is <see cref="Yield"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The delay is negative.</exception>
    public static void Sleep(TimeSpan delay)
    {
        if (delay < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(delay), delay, "The delay must not be negative.");
        var hub = Hub.Current;
        if (delay == TimeSpan.Zero)
        {
            hub.YieldCurrent();
            return;
        }
        var token = hub.BeginPark(WaitReason.Sleep);
        var timer = hub.AddWakeTimer(delay, token);
        try
        {
            hub.EndPark(token);
        }
        finally
        {
            timer.Cancel();
        }
    }

    /// <summary>Suspends the current greenlet for <paramref name="milliseconds"/> ms. <c>Sleep(0)</c> is <see cref="Yield"/>.</summary>
    public static void Sleep(int milliseconds)
    {
        if (milliseconds < 0)
            throw new ArgumentOutOfRangeException(nameof(milliseconds), milliseconds, "The delay must not be negative.");
        Sleep(TimeSpan.FromMilliseconds(milliseconds));
    }

    /// <summary>
    /// The async sleep for stackless greenlets: completes after <paramref name="delay"/> on the hub's own timer
    /// heap, without parking a thread. <c>await Green.SleepAsync(TimeSpan.Zero)</c> yields like <see cref="Yield"/>.
    /// </summary>
    /// <remarks>Called on a hub (its thread or one of its greenlets); the continuation runs wherever the awaiting
    /// code's synchronization context sends it — on the hub for stackless greenlets, on the thread pool after
    /// <c>ConfigureAwait(false)</c>. On a thread-pool thread outside a greenlet (code that left the hub that way, or
    /// any <c>Task.Run</c>) it is <see cref="Task.Delay(TimeSpan)"/>: no hub runs there to fire a timer, as for the
    /// primitives' Task-form waits. Like every blocking point, it is ended by a kill or an expired
    /// <see cref="GreenTimeout"/> of the awaiting stackless greenlet: the task then faults with that exception at
    /// once instead of completing after the delay.</remarks>
    public static Task SleepAsync(TimeSpan delay)
    {
        if (delay < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(delay), delay, "The delay must not be negative.");
        if (!Sync.Blocking.HasRunningHub()) return Task.Delay(delay);
        var hub = Hub.Current;
        hub.AssertOnHub();
        var owner = Sync.Blocking.TaskOwner(hub);
        if (Sync.Blocking.TakePendingException(owner) is { } pending) return Task.FromException(pending);
        var sleep = new AsyncSleep(owner is { IsStackless: true } ? owner : null);
        sleep.Timer = hub.AddTimer(delay, static s => ((AsyncSleep)s!).Finish(null), sleep);
        sleep.Owner?.TrackAsyncWait(sleep, GreenTimeout.FlowScope);
        return sleep.Task;
    }

    /// <summary>One <see cref="SleepAsync"/>: completed by its timer, or failed by its owner's kill or timeout.</summary>
    private sealed class AsyncSleep(Greenlet? owner) : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), Sync.IAsyncWait
    {
        public readonly Greenlet? Owner = owner;
        public HubTimer? Timer;

        public void Fail(Exception error) => Finish(error);

        public void Finish(Exception? error)
        {
            Timer?.Cancel();
            Owner?.UntrackAsyncWait(this);
            if (error == null) TrySetResult();
            else TrySetException(error);
        }
    }

    /// <summary>Lets every greenlet that is ready run once, then continues: the current greenlet goes to the back of the ready queue.</summary>
    public static void Yield() => Hub.Current.YieldCurrent();

    /// <summary>
    /// Waits until the greenlets have finished — all of them, or <paramref name="count"/> of them — or the
    /// timeout elapsed. Must be called on a hub (its thread or one of its greenlets).
    /// </summary>
    /// <param name="greenlets">The greenlets to wait for: of the calling greenlet's hub or of other hubs (the end of a
    /// greenlet of another hub is posted to this hub's inbox).</param>
    /// <param name="timeout">How long to wait; null waits as long as it takes.</param>
    /// <param name="raiseError">Rethrow the earliest failure (first to fail in time, not first in the list) as soon as one is seen.</param>
    /// <param name="count">Return as soon as this many have finished.</param>
    /// <returns>The finished greenlets, in the order they finished.</returns>
    public static IReadOnlyList<Greenlet> JoinAll(IEnumerable<Greenlet> greenlets, TimeSpan? timeout = null, bool raiseError = false, int? count = null)
    {
        ArgumentNullException.ThrowIfNull(greenlets);
        if (timeout is { } t && t < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), t, "The timeout must not be negative.");
        if (count is < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must not be negative.");
        var hub = Hub.Current;
        var pending = Distinct(greenlets, hub);
        // Split into the finished ones (the start of the result, in finishing order) and those to wait for.
        int wanted = Math.Min(count ?? int.MaxValue, pending.Count);
        var done = new List<Greenlet>(wanted);
        int stillAlive = 0;
        for (int i = 0; i < pending.Count; i++)
        {
            var g = pending[i];
            if (g.Dead) done.Add(g);
            else pending[stillAlive++] = g;
        }
        pending.RemoveRange(stillAlive, pending.Count - stillAlive);
        done.Sort(static (a, b) => a.FinishSequence.CompareTo(b.FinishSequence));
        Greenlet? failure = raiseError ? done.FirstOrDefault(g => g.Exception != null) : null;
        if (failure == null && done.Count < wanted && timeout != TimeSpan.Zero)
        {
            var token = hub.BeginPark(WaitReason.Join);
            bool over = false;
            // Each pending greenlet is linked once and a link fires once, so no duplicate check is needed. Runs on this
            // hub: directly for its own greenlets, posted back by a relay for greenlets of other hubs.
            Action<Greenlet> onDead = g =>
            {
                if (over) return; // a relayed end that arrived after the join returned
                done.Add(g);
                if (done.Count >= wanted || (raiseError && g.Exception != null)) hub.TryWake(token);
            };
            Action<Greenlet>? relay = null;
            bool foreign = false;
            HubTimer? timer = null;
            try
            {
                foreach (var g in pending)
                {
                    if (g.Hub == hub)
                    {
                        g.AddLink(onDead, LinkKind.All);
                        continue;
                    }
                    relay ??= x => hub.PostItem(RunItem.ForCallback(static s => { var (cb, dead) = ((Action<Greenlet>, Greenlet))s!; cb(dead); }, (onDead, x)));
                    foreign = true;
                    g.AddLink(relay, LinkKind.All); // posted to its hub
                }
                if (timeout is { } limit) timer = hub.AddWakeTimer(limit, token, Hub.TimedOut);
                if (foreign) hub.BeginExternalWait();
            }
            catch
            {
                hub.CancelPark(token);
                throw;
            }
            try
            {
                hub.EndPark(token);
            }
            finally
            {
                over = true;
                if (foreign) hub.EndExternalWait();
                timer?.Cancel();
                foreach (var g in pending) g.Unlink(g.Hub == hub ? onDead : relay!);
            }
            if (raiseError) failure = done.FirstOrDefault(g => g.Exception != null);
        }
        if (failure != null) ExceptionDispatchInfo.Throw(failure.Exception!);
        return done;
    }

    /// <summary>
    /// The greenlets of <paramref name="greenlets"/> without repeats, in first-seen order, after checking that each
    /// is non-null. Small lists (Join is a JoinAll of one) are deduplicated
    /// by comparison; large ones with one presized set, so joining 100k greenlets costs ~30 bytes each, not three
    /// growing sets and lists.
    /// </summary>
    private static List<Greenlet> Distinct(IEnumerable<Greenlet> greenlets, Hub hub)
    {
        var list = greenlets.TryGetNonEnumeratedCount(out var n) ? new List<Greenlet>(n) : new List<Greenlet>();
        HashSet<Greenlet>? seen = n > 16 ? new HashSet<Greenlet>(n, ReferenceEqualityComparer.Instance) : null;
        foreach (var g in greenlets)
        {
            ArgumentNullException.ThrowIfNull(g, nameof(greenlets));
            if (seen != null ? seen.Add(g) : !ContainsReference(list, g)) list.Add(g);
            else if (seen == null && list.Count > 16) seen = new HashSet<Greenlet>(list, ReferenceEqualityComparer.Instance);
        }
        return list;
    }

    private static bool ContainsReference(List<Greenlet> list, Greenlet g)
    {
        foreach (var x in list)
            if (ReferenceEquals(x, g)) return true;
        return false;
    }

    /// <summary>Kills every greenlet (see <see cref="Greenlet.Kill"/>) and, when <paramref name="block"/>, waits up to <paramref name="timeout"/> for all of them to die.</summary>
    /// <exception cref="TimeoutException">Some of them were still alive when <paramref name="timeout"/> elapsed,
    /// as gevent's <c>killall</c> raises <c>Timeout</c>. The kill stays in force: they raise it at every blocking point until they end.</exception>
    public static void KillAll(IEnumerable<Greenlet> greenlets, Exception? exception = null, bool block = true, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(greenlets);
        var all = greenlets.ToList();
        foreach (var g in all) g.Kill(exception, block: false);
        var hub = Hub.CurrentOrNull;
        if (block && hub != null && hub.CanBlockHere)
        {
            var mine = all.Where(g => !g.Dead).ToList(); // of any hub: JoinAll waits for greenlets of other hubs too
            if (mine.Count == 0) return;
            JoinAll(mine, timeout);
            if (mine.Any(g => !g.Dead)) ThrowStillAlive(mine, timeout);
        }
    }

    private static void ThrowStillAlive(List<Greenlet> greenlets, TimeSpan? timeout)
    {
        var alive = greenlets.Where(g => !g.Dead).ToList();
        throw new TimeoutException($"KillAll: {alive.Count} greenlet(s) still alive after {timeout}: {string.Join(", ", alive.Take(10))}{(alive.Count > 10 ? ", ..." : "")}. They keep raising the kill at every blocking point; one that never blocks (a CPU loop) or awaits a foreign task cannot see it.");
    }

    /// <summary>
    /// Waits for <paramref name="task"/> to complete. On a hub's thread only the current greenlet waits: the
    /// others run meanwhile. Off a hub it is a plain blocking wait. Rethrows the task's exception (unwrapped).
    /// </summary>
    /// <exception cref="TimeoutException">The task did not complete within <paramref name="timeout"/>.</exception>
    public static void Wait(Task task, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(task);
        WaitCompletion(task, timeout);
        task.GetAwaiter().GetResult();
    }

    /// <summary>Waits for <paramref name="task"/> and returns its result; see <see cref="Wait(Task, TimeSpan?)"/>.</summary>
    public static T Wait<T>(Task<T> task, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(task);
        WaitCompletion(task, timeout);
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Waits for <paramref name="task"/>; see <see cref="Wait(Task, TimeSpan?)"/>.</summary>
    public static void Wait(ValueTask task, TimeSpan? timeout = null)
    {
        if (task.IsCompleted)
        {
            task.GetAwaiter().GetResult();
            return;
        }
        Wait(task.AsTask(), timeout);
    }

    /// <summary>Waits for <paramref name="task"/> and returns its result; see <see cref="Wait(Task, TimeSpan?)"/>.</summary>
    public static T Wait<T>(ValueTask<T> task, TimeSpan? timeout = null) =>
        task.IsCompleted ? task.GetAwaiter().GetResult() : Wait(task.AsTask(), timeout);

    private static void WaitCompletion(Task task, TimeSpan? timeout)
    {
        if (timeout is { } t && t < TimeSpan.Zero && t != Timeout.InfiniteTimeSpan)
            throw new ArgumentOutOfRangeException(nameof(timeout), t, "The timeout must not be negative.");
        if (task.IsCompleted) return;
        var hub = Hub.CurrentOrNull;
        if (hub == null || !hub.CanBlockHere)
        {
            if (!((IAsyncResult)task).AsyncWaitHandle.WaitOne(timeout ?? Timeout.InfiniteTimeSpan))
                throw new TimeoutException($"The task did not complete within {timeout}.");
            return;
        }
        try
        {
            hub.WaitForTask(task, timeout, WaitReason.Task);
        }
        catch (Exception e)
        {
            // A kill or timeout: let the cancellation it began end first, as the patched task waits do (the task may be
            // a query given the greenlet's own token, still reading the connection that cleanup is about to close). A
            // task that completed meanwhile is the wait's result; the kill or timeout comes at the next blocking point.
            if (!LowLevel.Parking.SettleCancellation(task) || !task.IsCompletedSuccessfully) throw;
            LowLevel.Parking.KeepPending(e);
            return;
        }
        if (!task.IsCompleted)
            throw new TimeoutException($"The task did not complete within {timeout}.");
    }
}
