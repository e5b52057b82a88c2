using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Synchronous waits for tasks on a greenlet (sync-over-async): only the greenlet waits, so a task that needs
/// the hub to make progress (a stackless greenlet, a continuation posted to the hub) can complete.
/// </summary>
/// <remarks>
/// Funnels: <c>Task.InternalWait(int, CancellationToken)</c> ([MethodImpl(NoOptimization)], so never inlined)
/// is reached by every <c>Task.Wait</c> overload, <c>Task&lt;T&gt;.Result</c>,
/// <c>GetAwaiter().GetResult()</c> and <c>Task.WaitAny</c>; <c>Task.WaitAllCore</c> by every <c>Task.WaitAll</c>.
/// After the park the original runs with a zero timeout, so return values and the exceptions thrown are the
/// original's; a token cancelled before the task ended throws OperationCanceledException first, as the original's
/// wait does (the original with a zero timeout does not look at the token). Unlike the original, a task that has not
/// started yet is not run inline on the waiting thread (that would run foreign code on the greenlet's stack); the
/// thread pool runs it. A task created with <c>RunContinuationsAsynchronously</c> is waited for by the original
/// instead, on the greenlet's own thread with the baton released: a park would be woken through the thread pool, the
/// original's wait is signalled directly.
/// <para>A task that has completed successfully by the time a kill or timeout would end the wait is the wait's outcome:
/// the kill or timeout stays pending, raised at the greenlet's next blocking point. A task that failed or was cancelled
/// is not: its cancellation is often the greenlet's own kill or timeout (the token the runtime gives HttpClient's calls),
/// which the caller must see as such, not as a <c>TaskCanceledException</c>. A task's result can carry ownership that cannot
/// be given back (<c>SocketsHttpHandler</c> hands a pooled connection to its queued waiter by completing the waiter's
/// task): raising the kill after that hand-over lost the connection for good, where a thread whose token is cancelled
/// a moment after the hand-over receives the connection and returns it. Before deciding, the wait lets the cancellation
/// that the kill began on another thread finish (<see cref="Parking.SettleCancellation"/>): its callback may be what
/// withdraws the waiter from that queue. After a kill that cancelled the greenlet's own token, it also lets the task end
/// (at most 5 s): the task is often a query given that token, still reading the connection the greenlet's <c>using</c>
/// blocks are about to close. So does a timeout whose <c>Token</c> was asked for: a channel's read completes its task
/// through the thread pool a moment after it took the item, and raising the timeout at once lost the item.</para>
/// <para>The wait of <c>Parallel.For</c>, <c>ForEach</c> and <c>Invoke</c> for their iterations on pool threads is no
/// cancellation point while a kill or timeout is pending (<see cref="ShieldParallelsOwnWait"/>).</para>
/// </remarks>
internal static class CooperativeTask
{
    internal delegate bool WaitAllFn(ReadOnlySpan<Task> tasks, int millisecondsTimeout, CancellationToken cancellationToken);

    internal static readonly MethodInfo? InternalWaitMethod = typeof(Task).GetMethod("InternalWait", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(int), typeof(CancellationToken)]);
    internal static readonly MethodInfo? WaitAllCoreMethod = typeof(Task).GetMethod("WaitAllCore", BindingFlags.NonPublic | BindingFlags.Static, [typeof(ReadOnlySpan<Task>), typeof(int), typeof(CancellationToken)]);

    internal static readonly OriginalSlot<Func<Task, int, CancellationToken, bool>> Wait =
        new(InternalWaitMethod?.CreateDelegate<Func<Task, int, CancellationToken, bool>>() ?? ((t, ms, ct) => t.Wait(ms, ct)));

    internal static readonly OriginalSlot<WaitAllFn> WaitAll =
        new(WaitAllCoreMethod?.CreateDelegate<WaitAllFn>() ?? ((tasks, ms, ct) => Task.WaitAll(tasks.ToArray(), ms, ct)));

    /// <summary>Replaces <c>Task.InternalWait</c>.</summary>
    public static bool InternalWait(Task task, int millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout == 0 || task.IsCompleted || cancellationToken.IsCancellationRequested)
            return Wait.Call(task, millisecondsTimeout, cancellationToken);
        using (ShieldParallelsOwnWait())
        {
            Parking.WaitingFor(task);
            if (RunsContinuationsAsynchronously(task) && Parking.CanReleaseBaton)
                return new ReleasedWait([task], all: false, millisecondsTimeout, cancellationToken).Run();
            Park(hub, task, cancellationToken, millisecondsTimeout);
            // The original with a zero timeout returns false for a cancelled token, where its wait would have thrown: throw
            // as that wait does (Polly's pessimistic timeout waits with its timeout's token, then reads the Result).
            if (!task.IsCompleted) cancellationToken.ThrowIfCancellationRequested();
            return Wait.Call(task, 0, cancellationToken);
        }
    }

    private static readonly Type? s_taskReplicator = typeof(Parallel).Assembly.GetType("System.Threading.Tasks.TaskReplicator");

    /// <summary>A shield around the wait when it is <see cref="Parallel"/>'s own wait for the work it started and a kill or
    /// timeout is already pending; otherwise nothing (a default shield, whose disposal does nothing).</summary>
    /// <remarks>
    /// <para><c>Parallel.For</c>, <c>ForEach</c> and <c>Invoke</c> run part of the work on the calling greenlet and the rest
    /// on pool threads, and wait for the pool's part before they return: <c>TaskReplicator.Run</c> waits for each replica
    /// (<c>Replica.Wait</c>, a <c>Task.Wait</c> loop), <c>Parallel.Invoke</c> with at most 10 actions and no
    /// <c>MaxDegreeOfParallelism</c> below their count waits with <c>Task.WaitAll</c>. A kill or timeout raised in the
    /// greenlet's own part is caught there and recorded, and the loop tells the other replicas to stop; the wait that
    /// follows then met the same kill again (cancellation is level-triggered, docs/core.md) and <c>Parallel</c> returned
    /// at once, its iterations still running on pool threads after the greenlet's <c>finally</c> blocks and its
    /// <c>Join</c> (2–3 of 4 in a loop of 50 ms iterations). A thread's interrupt is consumed where it is thrown, so on a
    /// thread that wait completes and <c>Parallel</c> throws its <see cref="AggregateException"/> with the interrupt. So
    /// with a kill or timeout pending, this wait is no cancellation point: shielded, it waits until the work has ended,
    /// and the kill or timeout, inside the <see cref="AggregateException"/>, ends the greenlet or the timeout's scope as
    /// a raised one does (Greenlet.SetResult, GreenTimeoutException.RaisedBy). A second kill that comes meanwhile waits as
    /// well; the wait is bounded by the iterations under way, after which the loop's replicas stop, or by
    /// <c>Parallel.Invoke</c>'s other actions, which a thread waits for too. A kill or timeout that comes while the wait is
    /// under way with nothing pending ends it, as an interrupt ends a thread's.</para>
    /// <para>Narrow on purpose: only these two callers, in the Parallel assembly. Other framework code that waits for a
    /// task (a legacy <c>EndRead</c> through CoreLib's <c>TaskToAsyncResult.End</c>) stays a cancellation point. The caller
    /// is read from the stack, and only when something is pending: the wait's fast path walks no stack.</para>
    /// </remarks>
    private static CancellationShield ShieldParallelsOwnWait() =>
        Parking.CancellationPending && IsParallelsOwnWait() ? Green.Shield() : default;

    private static bool IsParallelsOwnWait()
    {
        if (Cooperative.Caller(typeof(Task))?.GetMethod() is not { DeclaringType: { } type } method || type.Assembly != typeof(Parallel).Assembly)
            return false;
        if (type == typeof(Parallel)) return method.Name == nameof(Parallel.Invoke);
        // Replica.Wait, or TaskReplicator.Run where the JIT inlined it there.
        for (var t = type; t is not null; t = t.DeclaringType)
        {
            if (t == s_taskReplicator) return true;
        }
        return false;
    }

    /// <summary>Parks until <paramref name="done"/> completes, the token is cancelled or the time is up. A kill or timeout
    /// that came as <paramref name="done"/> succeeded stays pending (see the remarks); the park throws nothing else.</summary>
    private static void Park(Hub hub, Task done, CancellationToken cancellationToken, int millisecondsTimeout)
    {
        var either = Cooperative.OrCancelled(done, cancellationToken, out var registration);
        using (registration)
        {
            try
            {
                Cooperative.Park(hub, either, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Task);
            }
            catch (Exception e)
            {
                if (!Settled(done)) throw;
                Parking.KeepPending(e);
            }
        }
    }

    private static readonly Func<ReleasedWait, bool> s_waitReleased = static w => w.Original(w.Ms);

    /// <summary>The original <c>Wait</c> or <c>WaitAll</c> run with the baton released. It records what the original
    /// threw: any other exception out of the release is the greenlet's kill or timeout, which stays pending when it came
    /// as every task succeeded (see the remarks).</summary>
    private sealed class ReleasedWait(Task[] tasks, bool all, int ms, CancellationToken token)
    {
        public readonly int Ms = ms;
        private Exception? _thrown;

        public bool Original(int millisecondsTimeout)
        {
            try
            {
                return all ? WaitAll.Call(tasks, millisecondsTimeout, token) : Wait.Call(tasks[0], millisecondsTimeout, token);
            }
            catch (Exception e)
            {
                _thrown = e;
                throw;
            }
        }

        public bool Run()
        {
            try
            {
                return Parking.RunReleased(s_waitReleased, this, WaitReason.Task, interruptible: true);
            }
            catch (Exception e) when (!ReferenceEquals(e, _thrown))
            {
                if (!Settled(all ? Task.WhenAll(tasks) : tasks[0])) throw;
                Parking.KeepPending(e);
                return Original(0);
            }
        }
    }

    /// <summary>After a kill or timeout ended a wait for <paramref name="awaited"/>: whether it succeeded, once the
    /// cancellations the kill began elsewhere have run (their callbacks may complete it, see
    /// <see cref="Parking.SettleCancellation"/>).</summary>
    private static bool Settled(Task awaited)
    {
        Parking.SettleCancellation(awaited);
        return awaited.IsCompletedSuccessfully;
    }

    /// <summary>Whether <paramref name="task"/> sends its continuations through the thread pool
    /// (<see cref="TaskCreationOptions.RunContinuationsAsynchronously"/>): a park would then be woken by a pool thread,
    /// which legacy code often keeps busy (see Hub.WaitForTask), while .NET's own blocking wait is signalled directly. So
    /// such a wait is the original, run on the greenlet's own thread with the baton released.</summary>
    private static bool RunsContinuationsAsynchronously(Task task) =>
        (task.CreationOptions & TaskCreationOptions.RunContinuationsAsynchronously) != 0;

    /// <summary>Replaces <c>Task.WaitAllCore</c>.</summary>
    public static bool WaitAllCore(ReadOnlySpan<Task> tasks, int millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout == 0 || cancellationToken.IsCancellationRequested)
            return WaitAll.Call(tasks, millisecondsTimeout, cancellationToken);
        bool pending = false;
        foreach (var t in tasks)
        {
            if (t is null) return WaitAll.Call(tasks, millisecondsTimeout, cancellationToken); // the original's ArgumentException
            pending |= !t.IsCompleted;
            Parking.WaitingFor(t);
        }
        if (!pending) return WaitAll.Call(tasks, 0, cancellationToken);
        using (ShieldParallelsOwnWait())
        {
            if (Parking.CanReleaseBaton)
            {
                foreach (var t in tasks)
                {
                    if (!t.IsCompleted && RunsContinuationsAsynchronously(t))
                        return new ReleasedWait(tasks.ToArray(), all: true, millisecondsTimeout, cancellationToken).Run();
                }
            }
            var all = Task.WhenAll(tasks.ToArray());
            Park(hub, all, cancellationToken, millisecondsTimeout);
            if (all.IsFaulted) _ = all.Exception; // observed: the original reports the failures below
            return WaitAll.Call(tasks, 0, cancellationToken);
        }
    }
}
