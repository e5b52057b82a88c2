using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Waits on thread-synchronisation primitives on a greenlet: a greenlet waiting for another greenlet of the
/// same hub yields instead of deadlocking the hub.
/// </summary>
/// <remarks>
/// <para>Each wait first asks the original with a zero timeout (which also validates arguments and state the
/// way the original does). If that fails it parks until a signal can have arrived, then asks again:</para>
/// <list type="bullet">
/// <item><c>SemaphoreSlim.Wait*</c> (funnel <c>WaitCore</c>): <c>WaitAsync</c> with the same timeout and a
/// linked token; a kill cancels it and gives back a count acquired in the race.</item>
/// <item><c>ManualResetEventSlim.Wait*</c> (and through it <c>CountdownEvent.Wait</c>, <c>Barrier.SignalAndWait</c>,
/// <c>Task.WaitAll</c>'s internal event): the event's WaitHandle registered with
/// <c>ThreadPool.RegisterWaitForSingleObject</c>.</item>
/// <item><c>WaitHandle.WaitOne</c>: the handle itself registered the same way. The registration acquires the
/// handle (an AutoResetEvent is reset, a Semaphore decremented), so the result is handed over through a
/// compare-exchange; a kill that loses the race gives the signal back (Set/Release). A <see cref="Mutex"/>
/// cannot be acquired on the greenlet's behalf by another thread: its own thread waits, with the hub's baton
/// released (Hub.Blocking.cs).</item>
/// <item><c>WaitHandle.WaitAny/WaitAll</c> (funnel <c>WaitMultiple</c>): see CooperativeThreading.WaitMultiple.cs.</item>
/// <item><c>Thread.Join</c>: polled with <c>Join(0)</c> and parks of 1–20 ms (no completion signal exists).</item>
/// </list>
/// </remarks>
internal static partial class CooperativeThreading
{
    internal delegate bool WaitOneFn(WaitHandle handle, int millisecondsTimeout);

    internal static readonly MethodInfo? SemaphoreWaitCoreMethod = typeof(SemaphoreSlim).GetMethod("WaitCore", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(long), typeof(CancellationToken)]);

    internal static readonly OriginalSlot<Func<SemaphoreSlim, long, CancellationToken, bool>> SemaphoreWait =
        new(SemaphoreWaitCoreMethod?.CreateDelegate<Func<SemaphoreSlim, long, CancellationToken, bool>>() ?? ((s, ms, ct) => s.Wait(TimeSpan.FromMilliseconds(ms), ct)));

    internal static readonly OriginalSlot<Func<ManualResetEventSlim, int, CancellationToken, bool>> EventWait = new(static (e, ms, ct) => e.Wait(ms, ct));
    internal static readonly OriginalSlot<WaitOneFn> WaitOneInt = new(static (h, ms) => h.WaitOne(ms));
    internal static readonly OriginalSlot<Func<WaitHandle, bool>> WaitOneNone = new(static h => h.WaitOne());
    internal static readonly OriginalSlot<Func<WaitHandle, TimeSpan, bool>> WaitOneTimeSpan = new(static (h, t) => h.WaitOne(t));
    internal static readonly OriginalSlot<Func<WaitHandle, int, bool, bool>> WaitOneIntContext = new(static (h, ms, c) => h.WaitOne(ms, c));
    internal static readonly OriginalSlot<Func<WaitHandle, TimeSpan, bool, bool>> WaitOneTimeSpanContext = new(static (h, t, c) => h.WaitOne(t, c));
    internal static readonly OriginalSlot<Func<Thread, int, bool>> JoinInt = new(static (t, ms) => t.Join(ms));
    internal static readonly OriginalSlot<Action<Thread>> JoinNone = new(static t => t.Join());
    internal static readonly OriginalSlot<Func<Thread, TimeSpan, bool>> JoinTimeSpan = new(static (t, ts) => t.Join(ts));

    // ---- SemaphoreSlim ----

    /// <summary>Replaces the private <c>SemaphoreSlim.WaitCore(long, CancellationToken)</c>.</summary>
    public static unsafe bool SemaphoreWaitCore(SemaphoreSlim semaphore, long millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0)
        {
            // The hot off-greenlet path: a direct calli to the original when bound (see OriginalSlot.Entry).
            nint entry = SemaphoreWait.Entry;
            return entry != 0
                ? ((delegate* managed<SemaphoreSlim, long, CancellationToken, bool>)entry)(semaphore, millisecondsTimeout, cancellationToken)
                : SemaphoreWait.Call(semaphore, millisecondsTimeout, cancellationToken);
        }
        if (SemaphoreWait.Call(semaphore, 0, cancellationToken)) return true;
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var timeout = millisecondsTimeout < 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(millisecondsTimeout);
        var task = semaphore.WaitAsync(timeout, cancel.Token);
        try
        {
            Cooperative.Park(hub, task, null, WaitReason.Lock, cancel, drain: true);
        }
        catch
        {
            // Killed: a count acquired in the race with the cancellation belongs to nobody now.
            if (task.IsCompletedSuccessfully && task.Result) semaphore.Release();
            throw;
        }
        if (task.IsCanceled) cancellationToken.ThrowIfCancellationRequested();
        return task.GetAwaiter().GetResult();
    }

    // ---- ManualResetEventSlim ----

    /// <summary>Replaces <c>ManualResetEventSlim.Wait(int, CancellationToken)</c>.</summary>
    public static unsafe bool EventSlimWait(ManualResetEventSlim e, int millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0)
        {
            nint entry = EventWait.Entry;
            return entry != 0
                ? ((delegate* managed<ManualResetEventSlim, int, CancellationToken, bool>)entry)(e, millisecondsTimeout, cancellationToken)
                : EventWait.Call(e, millisecondsTimeout, cancellationToken);
        }
        if (EventWait.Call(e, 0, cancellationToken)) return true;
        using var wait = new HandleWait(e.WaitHandle, consumes: false);
        var either = Cooperative.OrCancelled(wait.Signalled, cancellationToken, out var registration);
        using (registration)
            Cooperative.Park(hub, either, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Event);
        return EventWait.Call(e, 0, cancellationToken);
    }

    // ---- WaitHandle.WaitOne ----

    public static unsafe bool WaitOne(WaitHandle handle, int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0 || millisecondsTimeout < -1)
        {
            nint entry = WaitOneInt.Entry;
            return entry != 0
                ? ((delegate* managed<WaitHandle, int, bool>)entry)(handle, millisecondsTimeout)
                : WaitOneInt.Call(handle, millisecondsTimeout);
        }
        return WaitOneOnHub(hub, handle, millisecondsTimeout);
    }

    public static bool WaitOne(WaitHandle handle)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null ? WaitOneNone.Call(handle) : WaitOneOnHub(hub, handle, Timeout.Infinite);
    }

    public static bool WaitOne(WaitHandle handle, TimeSpan timeout)
    {
        var hub = Cooperative.ParkingHub();
        long ms = (long)timeout.TotalMilliseconds;
        return hub is null || ms is < -1 or > int.MaxValue || ms == 0
            ? WaitOneTimeSpan.Call(handle, timeout)
            : WaitOneOnHub(hub, handle, (int)ms);
    }

    public static bool WaitOne(WaitHandle handle, int millisecondsTimeout, bool exitContext)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || millisecondsTimeout is 0 or < -1
            ? WaitOneIntContext.Call(handle, millisecondsTimeout, exitContext)
            : WaitOneOnHub(hub, handle, millisecondsTimeout);
    }

    public static bool WaitOne(WaitHandle handle, TimeSpan timeout, bool exitContext)
    {
        var hub = Cooperative.ParkingHub();
        long ms = (long)timeout.TotalMilliseconds;
        return hub is null || ms is < -1 or > int.MaxValue || ms == 0
            ? WaitOneTimeSpanContext.Call(handle, timeout, exitContext)
            : WaitOneOnHub(hub, handle, (int)ms);
    }

    private static readonly Func<(WaitHandle Handle, int Ms), bool> s_waitOneReleased = static s => WaitOneInt.Call(s.Handle, s.Ms);

    private static bool WaitOneOnHub(Hub hub, WaitHandle handle, int millisecondsTimeout)
    {
        if (WaitOneInt.Call(handle, 0)) return true; // also throws ObjectDisposedException like the original
        if (handle is Mutex)
        {
            // Owned by the thread that acquires it: the greenlet's own thread waits, with the baton released. A kill
            // stays pending (a mutex just acquired must reach the caller's code that releases it).
            return Parking.CanReleaseBaton
                ? Parking.RunReleased(s_waitOneReleased, (handle, millisecondsTimeout), WaitReason.Thread, cancellationPoint: false)
                : WaitOneInt.Call(handle, millisecondsTimeout);
        }
        var wait = new HandleWait(handle, consumes: true);
        try
        {
            Cooperative.Park(hub, wait.Signalled, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Event);
        }
        catch
        {
            wait.Abandon(giveBack: true);
            throw;
        }
        return wait.Abandon(giveBack: false);
    }

    // ---- Thread.Join ----

    public static bool Join(Thread thread, int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout is 0 or < -1 || thread == Thread.CurrentThread) return JoinInt.Call(thread, millisecondsTimeout);
        return Cooperative.PollUntil(hub, () => JoinInt.Call(thread, 0), Cooperative.WaitTimeout(millisecondsTimeout));
    }

    public static void Join(Thread thread)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || thread == Thread.CurrentThread)
        {
            JoinNone.Call(thread);
            return;
        }
        Cooperative.PollUntil(hub, () => JoinInt.Call(thread, 0), null);
    }

    public static bool Join(Thread thread, TimeSpan timeout)
    {
        var hub = Cooperative.ParkingHub();
        long ms = (long)timeout.TotalMilliseconds;
        if (hub is null || ms is 0 or < -1 or > int.MaxValue || thread == Thread.CurrentThread) return JoinTimeSpan.Call(thread, timeout);
        return Cooperative.PollUntil(hub, () => JoinInt.Call(thread, 0), Cooperative.WaitTimeout(ms));
    }

    /// <summary>
    /// A thread-pool registered wait on a handle, exposed as a task. For handles whose wait acquires them
    /// (auto-reset events, semaphores) the acquisition is handed over exactly once: the callback and the
    /// waiter race on <c>_state</c> (Pending → Acquired by the callback, Pending → Abandoned by the waiter).
    /// </summary>
    private sealed class HandleWait : IDisposable
    {
        private const int Pending = 0, Acquired = 1, Abandoned = 2;
        private readonly WaitHandle _handle;
        private readonly bool _consumes;
        private readonly TaskCompletionSource _signalled = new();
        private readonly RegisteredWaitHandle _registration;
        private int _state;

        public HandleWait(WaitHandle handle, bool consumes)
        {
            _handle = handle;
            _consumes = consumes;
            _registration = ThreadPool.UnsafeRegisterWaitForSingleObject(handle, static (s, timedOut) => ((HandleWait)s!).OnSignal(timedOut), this, Timeout.Infinite, executeOnlyOnce: true);
        }

        public Task Signalled => _signalled.Task;

        private void OnSignal(bool timedOut)
        {
            if (timedOut) return;
            if (Interlocked.CompareExchange(ref _state, Acquired, Pending) == Pending)
                _signalled.TrySetResult();
            else if (_consumes)
                GiveBack(); // the waiter already gave up: do not keep what the registration acquired
        }

        /// <summary>Ends the wait. Returns whether the handle was acquired for the waiter.</summary>
        public bool Abandon(bool giveBack)
        {
            // Unregister waits (patched WaitOne) for the wait thread to drop the registration. It runs on the kill path
            // too, where the kill would be raised again inside it and leave the registration half-undone: shielded.
            using (Green.Shield()) _registration.Unregister(null);
            if (Interlocked.CompareExchange(ref _state, Abandoned, Pending) == Pending) return false;
            if (giveBack && _consumes) GiveBack();
            return true;
        }

        /// <summary>Undoes what the registration's wait acquired (a no-op for manual-reset events).</summary>
        public void GiveBack()
        {
            switch (_handle)
            {
                case Semaphore semaphore:
                    semaphore.Release();
                    break;
                case ManualResetEvent:
                    break; // nothing was consumed
                case EventWaitHandle e:
                    e.Set(); // auto-reset: the registration reset it
                    break;
            }
        }

        public void Dispose() => Abandon(giveBack: false);
    }
}
