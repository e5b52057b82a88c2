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
/// <para>The wait of <c>Parallel.For</c>, <c>ForEach</c> and <c>Invoke</c>, and of PLINQ queries, for their work on pool
/// threads is no cancellation point while a kill or timeout is pending (<see cref="ShieldForkJoinWait"/>).</para>
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
        using (ShieldForkJoinWait())
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

    /// <summary>A shield around the wait when it is a data-parallel library's own wait for the work it forked and a kill or
    /// timeout is already pending; otherwise nothing (a default shield, whose disposal does nothing). For the replacements
    /// of <c>Task</c>'s waits.</summary>
    /// <remarks>
    /// <para><c>Parallel.For</c>, <c>ForEach</c> and <c>Invoke</c>, and every PLINQ query, run part of the work on the calling
    /// greenlet and the rest on pool threads, and wait for the pool's part before they return: <c>TaskReplicator.Run</c>
    /// waits for each replica (<c>Replica.Wait</c>, a <c>Task.Wait</c> loop), <c>Parallel.Invoke</c> with at most 10
    /// actions and no <c>MaxDegreeOfParallelism</c> below their count waits with <c>Task.WaitAll</c>; PLINQ runs one
    /// partition inline in a root task's <c>RunSynchronously</c>, whose wait for the partitions attached to it is
    /// <c>Task</c>'s own wait on a <see cref="ManualResetEventSlim"/> (<see cref="ShieldForkJoinEventWait"/>), and
    /// <c>QueryTaskGroupState.QueryEnd</c> waits for that root task (a pipelined query's, as the enumerator is disposed). A
    /// kill or timeout raised in the greenlet's own part is caught there and recorded, and the library tells the other
    /// workers to stop; the wait that follows then met the same kill again (cancellation is level-triggered,
    /// docs/core.md) and the call returned at once, its work still running on pool threads after the greenlet's
    /// <c>finally</c> blocks and its <c>Join</c> (2–3 of 4 iterations of <c>Parallel.For</c>; every element of a PLINQ
    /// <c>ForAll</c>'s other partitions, since it polls its cancellation once per 64 elements). A thread's interrupt is
    /// consumed where it is thrown, so on a thread that wait completes and the call throws its
    /// <see cref="AggregateException"/> with the interrupt. So with a kill or timeout pending, this wait is no cancellation
    /// point: shielded, it waits until the work has ended, and the kill or timeout, inside the
    /// <see cref="AggregateException"/> (or alone, where a pipelined query's <c>MoveNext</c> raised it), ends the greenlet or
    /// the timeout's scope as a raised one does (Greenlet.SetResult, GreenTimeoutException.RaisedBy). A second kill that
    /// comes meanwhile waits as well; the wait is bounded by the work under way, which the library has told to stop, or
    /// by <c>Parallel.Invoke</c>'s other actions, which a thread waits for too. A kill or timeout that comes while the
    /// wait is under way with nothing pending ends it, as an interrupt ends a thread's.</para>
    /// <para>Which waits: a task wait whose first caller outside <c>Task</c> is code of
    /// <c>System.Threading.Tasks.Parallel</c> or <c>System.Linq.Parallel</c>. Every task wait those two assemblies make is
    /// such a wait for their own workers (their other waits, on PLINQ's channels, are no task waits and stay cancellation
    /// points). Read from .NET 10's IL: <c>Replica.Wait</c>, <c>Replica.Start</c>'s and <c>Parallel.Invoke</c>'s
    /// <c>RunSynchronously</c>, <c>Parallel.Invoke</c>'s <c>WaitAll</c>; <c>QueryEnd</c>'s <c>Wait</c>, the
    /// <c>RunSynchronously</c> of <c>SpoolingTask</c>, <c>OrderPreservingSpoolingTask</c> and <c>QueryTask</c>. So the test
    /// is by assembly and survives the JIT inlining one of their methods into another. A wait that
    /// the user's delegate makes under their frames has the delegate as its caller and stays a cancellation point, as does
    /// any other framework wait for a task (a legacy <c>EndRead</c> through CoreLib's <c>TaskToAsyncResult.End</c>). The
    /// caller is read from the stack, and only when something is pending: the wait's fast path walks no stack.</para>
    /// </remarks>
    private static CancellationShield ShieldForkJoinWait() =>
        Parking.CancellationPending && IsForkJoinWait(inTaskWait: true) ? Green.Shield() : default;

    /// <summary><see cref="ShieldForkJoinWait"/> for a <see cref="ManualResetEventSlim"/> wait: only <c>Task</c>'s own
    /// (<c>RunSynchronously</c>'s wait for the children of a task that ran inline) made for a data-parallel library. PLINQ's
    /// consumer waiting on its channel's event is a wait for data, and stays a cancellation point.</summary>
    internal static CancellationShield ShieldForkJoinEventWait() =>
        Parking.CancellationPending && IsForkJoinWait(inTaskWait: false) ? Green.Shield() : default;

    private static bool IsForkJoinWait(bool inTaskWait)
    {
        foreach (var frame in new System.Diagnostics.StackTrace(1, false).GetFrames())
        {
            var type = frame.GetMethod()?.DeclaringType;
            if (type is null || type.Assembly == typeof(CooperativeTask).Assembly || type.Assembly == typeof(Hub).Assembly)
                continue;
            if (type == typeof(Task) || (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Task<>)))
            {
                inTaskWait = true;
                continue;
            }
            if (type == typeof(ManualResetEventSlim) && !inTaskWait) continue;
            return inTaskWait && IsDataParallel(type.Assembly);
        }
        return false;
    }

    /// <summary>The two libraries whose task waits are all waits for the workers they forked. PLINQ's assembly is
    /// recognised by name, so that a process that never runs a query does not load it; the host resolves that name to the
    /// framework's copy.</summary>
    private static bool IsDataParallel(Assembly assembly) =>
        assembly == typeof(Parallel).Assembly || assembly.GetName().Name == "System.Linq.Parallel";

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
        using (ShieldForkJoinWait())
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
