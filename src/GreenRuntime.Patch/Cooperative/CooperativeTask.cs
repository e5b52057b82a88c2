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
/// a moment after the hand-over receives the connection and returns it.</para>
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
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0 || task.IsCompleted || cancellationToken.IsCancellationRequested)
            return Wait.Call(task, millisecondsTimeout, cancellationToken);
        Parking.WaitingFor(task);
        if (RunsContinuationsAsynchronously(task) && Parking.CanReleaseBaton)
        {
            var wait = new ReleasedWait<Task>(task, millisecondsTimeout, cancellationToken);
            try
            {
                return Parking.RunReleased(s_waitReleased, wait, WaitReason.Task, interruptible: true);
            }
            catch (Exception e) when (task.IsCompletedSuccessfully && !ReferenceEquals(e, wait.Thrown))
            {
                Parking.KeepPending(e); // a kill or timeout that came as the task completed: see the remarks
                return Wait.Call(task, 0, cancellationToken);
            }
        }
        var either = Cooperative.OrCancelled(task, cancellationToken, out var registration);
        using (registration)
        {
            try
            {
                Cooperative.Park(hub, either, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Task);
            }
            catch (Exception e) when (task.IsCompletedSuccessfully)
            {
                Parking.KeepPending(e); // the park throws only a kill or timeout: see the remarks
            }
        }
        // The original with a zero timeout returns false for a cancelled token, where its wait would have thrown: throw
        // as that wait does (Polly's pessimistic timeout waits with its timeout's token, then reads the Result).
        if (!task.IsCompleted) cancellationToken.ThrowIfCancellationRequested();
        return Wait.Call(task, 0, cancellationToken);
    }

    private static readonly Func<ReleasedWait<Task>, bool> s_waitReleased = static s => s.Run(static s => Wait.Call(s.Tasks, s.Ms, s.Token));
    private static readonly Func<ReleasedWait<Task[]>, bool> s_waitAllReleased = static s => s.Run(static s => WaitAll.Call(s.Tasks, s.Ms, s.Token));

    /// <summary>A wait run with the baton released, and what the original threw, if it did: any other exception out of
    /// the release is the greenlet's kill or timeout.</summary>
    private sealed class ReleasedWait<T>(T tasks, int ms, CancellationToken token)
    {
        public readonly T Tasks = tasks;
        public readonly int Ms = ms;
        public readonly CancellationToken Token = token;
        public Exception? Thrown;

        public bool Run(Func<ReleasedWait<T>, bool> wait)
        {
            try
            {
                return wait(this);
            }
            catch (Exception e)
            {
                Thrown = e;
                throw;
            }
        }
    }

    /// <summary>Whether <paramref name="task"/> sends its continuations through the thread pool
    /// (<see cref="TaskCreationOptions.RunContinuationsAsynchronously"/>): a park would then be woken by a pool thread,
    /// which legacy code often keeps busy (see Hub.WaitForTask), while .NET's own blocking wait is signalled directly. So
    /// such a wait is the original, run on the greenlet's own thread with the baton released.</summary>
    private static bool RunsContinuationsAsynchronously(Task task) =>
        (task.CreationOptions & TaskCreationOptions.RunContinuationsAsynchronously) != 0;

    private static bool AllSucceeded(Task[] tasks) => Array.TrueForAll(tasks, static t => t.IsCompletedSuccessfully);

    /// <summary>Replaces <c>Task.WaitAllCore</c>.</summary>
    public static bool WaitAllCore(ReadOnlySpan<Task> tasks, int millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0 || cancellationToken.IsCancellationRequested)
            return WaitAll.Call(tasks, millisecondsTimeout, cancellationToken);
        bool pending = false;
        foreach (var t in tasks)
        {
            if (t is null) return WaitAll.Call(tasks, millisecondsTimeout, cancellationToken); // the original's ArgumentException
            pending |= !t.IsCompleted;
            Parking.WaitingFor(t);
        }
        if (pending && Parking.CanReleaseBaton)
        {
            foreach (var t in tasks)
            {
                if (!t.IsCompleted && RunsContinuationsAsynchronously(t))
                {
                    var wait = new ReleasedWait<Task[]>(tasks.ToArray(), millisecondsTimeout, cancellationToken);
                    try
                    {
                        return Parking.RunReleased(s_waitAllReleased, wait, WaitReason.Task, interruptible: true);
                    }
                    catch (Exception e) when (AllSucceeded(wait.Tasks) && !ReferenceEquals(e, wait.Thrown))
                    {
                        Parking.KeepPending(e); // as in InternalWait
                        return WaitAll.Call(wait.Tasks, 0, cancellationToken);
                    }
                }
            }
        }
        if (pending)
        {
            var all = Task.WhenAll(tasks.ToArray());
            var either = Cooperative.OrCancelled(all, cancellationToken, out var registration);
            using (registration)
            {
                try
                {
                    Cooperative.Park(hub, either, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Task);
                }
                catch (Exception e) when (all.IsCompletedSuccessfully)
                {
                    Parking.KeepPending(e); // as in InternalWait
                }
            }
            if (all.IsFaulted) _ = all.Exception; // observed: the original reports the failures below
        }
        return WaitAll.Call(tasks, 0, cancellationToken);
    }
}
