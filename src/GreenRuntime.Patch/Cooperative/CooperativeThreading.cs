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
/// <item><c>SemaphoreSlim.Wait*</c> (funnel <c>WaitCore</c>): the original wait with the hub's baton released, like
/// the events below; only when no carrier is left, <c>WaitAsync</c> with the same timeout and a linked token. Either
/// way a kill ends the wait and gives back a count acquired in the race.</item>
/// <item><c>ManualResetEventSlim.Wait*</c> (and through it <c>CountdownEvent.Wait</c>, <c>Barrier.SignalAndWait</c>,
/// <c>Task.WaitAll</c>'s internal event) and <c>WaitHandle.WaitOne</c>: the original wait, run by the greenlet's own
/// thread with the hub's baton released (Hub.Blocking.cs), so <c>Set</c>/<c>Release</c> wakes it directly and it
/// acquires exactly as the original; a kill or timeout interrupts it (<c>Thread.Interrupt</c>), and a signal acquired
/// just as the kill was raised is given back (Set/Release); a <see cref="Mutex"/> acquired so is released again by its
/// thread. Only when no carrier is left to take over the hub is a mutex polled (only its own thread may acquire it) and
/// any other handle registered with <c>ThreadPool.RegisterWaitForSingleObject</c> instead
/// (<see cref="HandleWait"/>): that registration acquires the handle (an AutoResetEvent is reset, a Semaphore
/// decremented), so the result is handed over through a compare-exchange; a kill that loses the race gives the signal
/// back. (Registered waits alone made every wake wait for a pool worker: seconds when the pool's threads were busy.)</item>
/// <item><c>WaitHandle.WaitAny/WaitAll</c> (funnel <c>WaitMultiple</c>): see CooperativeThreading.WaitMultiple.cs.</item>
/// <item><c>Mutex.ReleaseMutex</c>: the original, then one mutex fewer in the carrier's count of what it owns (the waits
/// above count what they acquire), so that only a body still holding a mutex at its end ends its carrier.</item>
/// <item><c>GC.WaitForPendingFinalizers</c>: the original wait with the baton released (a finalizer may need a lock that
/// a parked greenlet holds), not interrupted.</item>
/// <item><c>Thread.Start</c> (funnel <c>StartCore</c>): see CooperativeThreading.Start.cs.</item>
/// <item><c>Thread.Join</c>: the original join, released and interruptible the same way; when no carrier is left, polled
/// with <c>Join(0)</c> and parks of 1–20 ms (no completion signal exists for another thread's end).</item>
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
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout == 0)
        {
            // The hot off-greenlet path: a direct calli to the original when bound (see OriginalSlot.Entry).
            nint entry = SemaphoreWait.Entry;
            return entry != 0
                ? ((delegate* managed<SemaphoreSlim, long, CancellationToken, bool>)entry)(semaphore, millisecondsTimeout, cancellationToken)
                : SemaphoreWait.Call(semaphore, millisecondsTimeout, cancellationToken);
        }
        if (SemaphoreWait.Call(semaphore, 0, cancellationToken)) return true;
        if (Parking.CanReleaseBaton) return new ReleasedSemaphoreWait(semaphore, millisecondsTimeout, cancellationToken).Run();
        // No carrier left to take over the hub: an async wait, whose completion reaches the hub through the thread pool.
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

    /// <summary>The original semaphore wait on the greenlet's own thread with the baton released: <c>Release</c> wakes
    /// that thread directly. An async waiter's task would complete its continuations on the thread pool (SemaphoreSlim
    /// runs them asynchronously), so a wake would wait for a pool thread, and legacy code whose pool threads block in
    /// the very producers the greenlet waits for (a bounded <c>BlockingCollection</c> fed by <c>Task.Run</c>) waited for
    /// the pool to grow: measured 6.5 ms per item. A kill or timeout ends the wait by cancelling a token the wait was
    /// given along with the caller's, not with <c>Thread.Interrupt</c>: SemaphoreSlim counts the waiters a
    /// <c>Release</c> has pulsed, and an interrupt that lands after the pulse loses that count, so every later
    /// <c>Release</c> took a woken waiter to be on its way and woke nobody (a greenlet then waited for ever with the
    /// count free). Its own cancellation keeps the count right. A count acquired just as the kill came is released
    /// again.</summary>
    private sealed class ReleasedSemaphoreWait(SemaphoreSlim semaphore, long millisecondsTimeout, CancellationToken cancellationToken)
    {
        private static readonly Func<ReleasedSemaphoreWait, bool> s_wait = static w => w._acquired = SemaphoreWait.Call(w._semaphore, w._timeout, w._token);

        private static readonly Func<ReleasedSemaphoreWait, CancellationToken, bool> s_waitReleased = static (w, token) =>
        {
            w._token = token;
            return Parking.RunReleased(s_wait, w, WaitReason.Lock);
        };

        private readonly SemaphoreSlim _semaphore = semaphore;
        private readonly long _timeout = millisecondsTimeout;
        private readonly CancellationToken _callerToken = cancellationToken;
        private CancellationToken _token;
        private bool _acquired;

        public bool Run()
        {
            try
            {
                return Cooperative.WithKillToken(this, _callerToken, s_waitReleased);
            }
            catch
            {
                if (_acquired) _semaphore.Release(); // acquired as the kill came: the count belongs to nobody now
                throw;
            }
        }
    }

    // ---- ManualResetEventSlim ----

    private static readonly Func<(ManualResetEventSlim Event, int Ms, CancellationToken Token), bool>
        s_eventWaitReleased = static s => EventWait.Call(s.Event, s.Ms, s.Token);

    /// <summary>Replaces <c>ManualResetEventSlim.Wait(int, CancellationToken)</c>.</summary>
    public static unsafe bool EventSlimWait(ManualResetEventSlim e, int millisecondsTimeout, CancellationToken cancellationToken)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout is 0 or < -1) // the original throws for < -1, set or not
        {
            nint entry = EventWait.Entry;
            return entry != 0
                ? ((delegate* managed<ManualResetEventSlim, int, CancellationToken, bool>)entry)(e, millisecondsTimeout, cancellationToken)
                : EventWait.Call(e, millisecondsTimeout, cancellationToken);
        }
        if (EventWait.Call(e, 0, cancellationToken)) return true;
        using var forkJoin = CooperativeTask.ShieldForkJoinEventWait(); // Task.RunSynchronously's wait for a PLINQ query's partitions
        if (Parking.CanReleaseBaton)
        {
            // The original wait on the greenlet's own thread, the baton released: Set() pulses that thread directly,
            // where a registered wait handle would pass the signal through the thread pool's wait thread and a worker
            // (queued behind whatever else the pool runs) before the hub heard of it. A kill or timeout interrupts it.
            return Parking.RunReleased(s_eventWaitReleased, (e, millisecondsTimeout, cancellationToken), WaitReason.Event,
                interruptible: true);
        }
        using var wait = new HandleWait(e.WaitHandle, consumes: false);
        var either = Cooperative.OrCancelled(wait.Signalled, cancellationToken, out var registration);
        using (registration)
            Cooperative.Park(hub, either, Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Event);
        return EventWait.Call(e, 0, cancellationToken);
    }

    // ---- WaitHandle.WaitOne ----

    /// <summary>
    /// Before any wait that may acquire a <see cref="Mutex"/>, on the thread that waits, when <c>ReleaseMutex</c> is not
    /// patched (refused, or not yet bound): nothing then counts what the body gives back, so a pooled carrier ends once the
    /// greenlet body it runs is over (<see cref="Parking.RetireCarrierAfterBody"/>), whatever the body released. With the
    /// release patched, the acquisitions are counted instead (<see cref="NoteMutexAcquired"/>, <see cref="ReleaseMutex"/>)
    /// and the carrier ends only when the body still owns a mutex at its end. Either way a mutex the body did not release
    /// is abandoned as on a thread's exit, for every other waiter and other processes, and the next greenlet on that
    /// thread does not acquire it recursively as its owner: .NET on Linux keeps a mutex's owner in native code and offers
    /// no way to ask which mutexes a thread owns.
    /// </summary>
    private static void NoteMutexWait()
    {
        if (ReleaseMutexSlot.Entry == 0) Parking.RetireCarrierAfterBody();
    }

    /// <summary>Counts <paramref name="count"/> mutex acquisitions of the calling thread (<see cref="Parking.NoteThreadAcquired"/>).
    /// Returns false, for an exception filter: an <see cref="AbandonedMutexException"/> acquires too, and the filter counts
    /// it without catching it.</summary>
    private static bool NoteMutexAcquired(int count)
    {
        Parking.NoteThreadAcquired(count);
        return false;
    }

    private static bool CountIfAcquired(bool acquired)
    {
        if (acquired) NoteMutexAcquired(1);
        return acquired;
    }

    public static unsafe bool WaitOne(WaitHandle handle, int millisecondsTimeout)
    {
        if (handle is Mutex) return WaitOneMutex(handle, millisecondsTimeout);
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout == 0 || millisecondsTimeout < -1)
        {
            nint entry = WaitOneInt.Entry;
            return entry != 0
                ? ((delegate* managed<WaitHandle, int, bool>)entry)(handle, millisecondsTimeout)
                : WaitOneInt.Call(handle, millisecondsTimeout);
        }
        return WaitOneOnHub(hub, handle, millisecondsTimeout);
    }

    private static bool WaitOneMutex(WaitHandle handle, int millisecondsTimeout)
    {
        NoteMutexWait();
        try
        {
            var hub = Cooperative.WaitingHub();
            return CountIfAcquired(hub is null || millisecondsTimeout == 0 || millisecondsTimeout < -1
                ? WaitOneInt.Call(handle, millisecondsTimeout)
                : WaitOneOnHub(hub, handle, millisecondsTimeout));
        }
        catch (AbandonedMutexException) when (NoteMutexAcquired(1))
        {
            throw; // never reached: the filter only counts
        }
    }

    public static bool WaitOne(WaitHandle handle)
    {
        if (handle is Mutex) return WaitOneMutex(handle, Timeout.Infinite);
        var hub = Cooperative.WaitingHub();
        return hub is null ? WaitOneNone.Call(handle) : WaitOneOnHub(hub, handle, Timeout.Infinite);
    }

    public static bool WaitOne(WaitHandle handle, TimeSpan timeout)
    {
        long ms = (long)timeout.TotalMilliseconds;
        bool original = ms is < -1 or > int.MaxValue;
        if (handle is Mutex && !original) return WaitOneMutex(handle, (int)ms);
        var hub = Cooperative.WaitingHub();
        return hub is null || original || ms == 0
            ? WaitOneTimeSpan.Call(handle, timeout) // the original's argument check
            : WaitOneOnHub(hub, handle, (int)ms);
    }

    public static bool WaitOne(WaitHandle handle, int millisecondsTimeout, bool exitContext)
    {
        if (handle is Mutex) return WaitOneMutex(handle, millisecondsTimeout);
        var hub = Cooperative.WaitingHub();
        return hub is null || millisecondsTimeout is 0 or < -1
            ? WaitOneIntContext.Call(handle, millisecondsTimeout, exitContext)
            : WaitOneOnHub(hub, handle, millisecondsTimeout);
    }

    public static bool WaitOne(WaitHandle handle, TimeSpan timeout, bool exitContext)
    {
        long ms = (long)timeout.TotalMilliseconds;
        bool original = ms is < -1 or > int.MaxValue;
        if (handle is Mutex && !original) return WaitOneMutex(handle, (int)ms);
        var hub = Cooperative.WaitingHub();
        return hub is null || original || ms == 0
            ? WaitOneTimeSpanContext.Call(handle, timeout, exitContext)
            : WaitOneOnHub(hub, handle, (int)ms);
    }

    // ---- Mutex.ReleaseMutex ----

    internal static readonly OriginalSlot<Action<Mutex>> ReleaseMutexSlot = new(static m => m.ReleaseMutex());

    /// <summary>
    /// Replaces <see cref="Mutex.ReleaseMutex"/> (a 25-byte method, the only release of a mutex, which its callers compiled
    /// after the patch cannot inline): once the original has released it, the calling thread's count of mutex
    /// acquisitions goes down (<see cref="Parking.NoteThreadReleased"/>), so a body that gave back every mutex it took
    /// keeps its carrier. A release that throws (not the owner) counts nothing.
    /// </summary>
    public static unsafe void ReleaseMutex(Mutex mutex)
    {
        nint entry = ReleaseMutexSlot.Entry;
        if (entry != 0) ((delegate* managed<Mutex, void>)entry)(mutex);
        else ReleaseMutexSlot.Call(mutex);
        Parking.NoteThreadReleased();
    }

    private static bool WaitOneOnHub(Hub hub, WaitHandle handle, int millisecondsTimeout)
    {
        if (WaitOneInt.Call(handle, 0)) return true; // also throws ObjectDisposedException like the original
        // The original wait on the greenlet's own thread, the baton released: Set/Release wakes that thread directly
        // (rather than through the thread pool) and it acquires exactly as the original does.
        if (Parking.CanReleaseBaton) return new ReleasedWaitOne(handle, millisecondsTimeout).Run(handle is Mutex);
        if (handle is Mutex) // no carrier left, and only this thread can own it: polled here (see PollMutex)
            return PollMutex(hub, () => WaitOneInt.Call(handle, 0), millisecondsTimeout);
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

    /// <summary>A mutex wait when no carrier is left to take over the hub: non-blocking attempts on the greenlet's own
    /// thread (the one that must own the mutex) between parks of 1–20 ms (<see cref="PollBackoff"/>). Waited for with the
    /// baton held, a mutex that a parked greenlet of the same hub held was never released: the hub stopped for good. A
    /// kill or timeout is raised from a pause, with nothing acquired.</summary>
    private static bool PollMutex(Hub hub, Func<bool> tryAcquire, int millisecondsTimeout) =>
        Cooperative.PollUntil(hub, tryAcquire, Cooperative.WaitTimeout(millisecondsTimeout));

    // ---- Thread.Join ----

    public static bool Join(Thread thread, int millisecondsTimeout)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout is 0 or < -1 || thread == Thread.CurrentThread) return JoinInt.Call(thread, millisecondsTimeout);
        return JoinOnHub(hub, thread, millisecondsTimeout);
    }

    public static void Join(Thread thread)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || thread == Thread.CurrentThread)
        {
            JoinNone.Call(thread);
            return;
        }
        JoinOnHub(hub, thread, Timeout.Infinite);
    }

    public static bool Join(Thread thread, TimeSpan timeout)
    {
        var hub = Cooperative.WaitingHub();
        long ms = (long)timeout.TotalMilliseconds;
        if (hub is null || ms is 0 or < -1 or > int.MaxValue || thread == Thread.CurrentThread) return JoinTimeSpan.Call(thread, timeout);
        return JoinOnHub(hub, thread, (int)ms);
    }

    private static readonly Func<(Thread Thread, int Ms), bool> s_joinReleased = static s => JoinInt.Call(s.Thread, s.Ms);

    /// <summary>The original join on the greenlet's own thread with the baton released, which returns the moment the
    /// thread ends (a kill or timeout interrupts it); polled only when no carrier is left to take over the hub.</summary>
    private static bool JoinOnHub(Hub hub, Thread thread, int millisecondsTimeout)
    {
        if (JoinInt.Call(thread, 0)) return true; // also throws the original's exception for a thread never started
        return Parking.CanReleaseBaton
            ? Parking.RunReleased(s_joinReleased, (thread, millisecondsTimeout), WaitReason.Thread, interruptible: true)
            : Cooperative.PollUntil(hub, () => JoinInt.Call(thread, 0), Cooperative.WaitTimeout(millisecondsTimeout));
    }

    internal static readonly OriginalSlot<Action> WaitForFinalizers = new(static () => GC.WaitForPendingFinalizers());

    private static readonly Func<bool, bool> s_waitForFinalizersReleased = static _ =>
    {
        WaitForFinalizers.Call();
        return true;
    };

    /// <summary>Replaces <see cref="GC.WaitForPendingFinalizers"/>: on a greenlet, the original wait with the baton
    /// released. Finalizers run on the finalizer thread and may take a lock that a parked greenlet of this hub holds;
    /// waited for holding the baton, that greenlet never ran to release it and the hub deadlocked for good. Not
    /// interrupted by a kill (the runtime's wait is not meant to be cut short); a kill or timeout that comes meanwhile is
    /// raised once the finalizers are done.</summary>
    public static void WaitForPendingFinalizers()
    {
        if (Cooperative.ParkingHub() is null || !Parking.CanReleaseBaton)
        {
            WaitForFinalizers.Call();
            return;
        }
        Parking.RunReleased(s_waitForFinalizersReleased, false, WaitReason.Thread);
    }

    /// <summary>
    /// A released wait on wait handles (<c>WaitOne</c>, <c>WaitAny</c>/<c>WaitAll</c>) that records what it acquired. A kill
    /// or timeout interrupts it, and what it acquired just as the kill was raised is given back: nobody would own it
    /// otherwise. Where that cannot be done exactly (a plain <see cref="EventWaitHandle"/>, whose reset mode .NET does not
    /// reveal: Set would restore an auto-reset event but set a manual-reset one that was reset meanwhile), the wait keeps
    /// what it acquired and returns it, and the kill is raised at the greenlet's next blocking point, as if it had come a
    /// moment later. A <see cref="Mutex"/> is given back by releasing it, on the thread that acquired it: that thread is
    /// the greenlet's own carrier, which runs the wait.
    /// </summary>
    private abstract class ReleasedHandleWait<TResult>
    {
        private static readonly Func<ReleasedHandleWait<TResult>, TResult> s_wait = static w => w.Wait();

        /// <summary>The original wait (no baton).</summary>
        protected abstract TResult Wait();

        /// <summary>Whether <see cref="Wait"/> acquired something, and what it returned then.</summary>
        protected abstract bool Acquired(out TResult result);

        /// <summary>Whether what <see cref="Wait"/> acquired can be given back exactly.</summary>
        protected abstract bool CanGiveBack { get; }

        /// <summary>Gives back what <see cref="Wait"/> acquired, if anything.</summary>
        protected abstract void GiveBackAcquired();

        public TResult Run(bool mutex)
        {
            try
            {
                return Parking.RunReleased(s_wait, this, mutex ? WaitReason.Thread : WaitReason.Event, interruptible: true);
            }
            catch (Exception e) when (!CanGiveBack && Acquired(out var result))
            {
                Parking.KeepPending(e); // raised only after the wait returned, so it is the greenlet's kill or timeout
                return result;
            }
            catch
            {
                GiveBackAcquired();
                throw;
            }
        }
    }

    private sealed class ReleasedWaitOne(WaitHandle handle, int millisecondsTimeout) : ReleasedHandleWait<bool>
    {
        private bool _acquired;

        protected override bool Wait() =>
            _acquired = handle is Mutex ? WaitInSlices(handle, millisecondsTimeout) : WaitOneInt.Call(handle, millisecondsTimeout);

        /// <summary>
        /// A mutex's wait, in slices with an alertable point between them, where the interrupt a kill or timeout sends
        /// (ReleasedInterrupt) is raised: the wait of a named mutex ignores <see cref="Thread.Interrupt"/> on Linux, so a
        /// greenlet waiting for one that another process held could not be killed at all, and its timeout came only when
        /// the mutex was released.
        /// </summary>
        private static bool WaitInSlices(WaitHandle handle, int millisecondsTimeout)
        {
            const int Slice = 20;
            long start = Environment.TickCount64;
            while (true)
            {
                int left = millisecondsTimeout == Timeout.Infinite ? Slice : (int)Math.Max(0, millisecondsTimeout - (Environment.TickCount64 - start));
                if (WaitOneInt.Call(handle, Math.Min(left, Slice))) return true;
                if (left <= Slice && millisecondsTimeout != Timeout.Infinite) return false;
                Thread.Sleep(0); // alertable: throws ThreadInterruptedException when an interrupt is pending
            }
        }

        protected override bool Acquired(out bool result) => result = _acquired;

        protected override bool CanGiveBack => CanGiveBackExactly(handle);

        protected override void GiveBackAcquired()
        {
            if (_acquired) GiveBack(handle);
        }
    }

    /// <summary>Whether <see cref="GiveBack"/> undoes exactly what a wait on <paramref name="handle"/> acquired.</summary>
    private static bool CanGiveBackExactly(WaitHandle handle) =>
        handle is not EventWaitHandle || handle is ManualResetEvent or AutoResetEvent;

    /// <summary>Undoes what a wait on <paramref name="handle"/> acquired (a no-op for manual-reset events). A mutex is
    /// released, so this must run on the thread that acquired it.</summary>
    private static void GiveBack(WaitHandle handle)
    {
        switch (handle)
        {
            case Semaphore semaphore:
                semaphore.Release();
                break;
            case Mutex mutex:
                ReleaseMutexSlot.Call(mutex); // gives back what the wait never counted
                break;
            case ManualResetEvent:
                break; // nothing was consumed
            case EventWaitHandle e:
                e.Set(); // auto-reset: the wait reset it
                break;
        }
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

        /// <summary>Undoes what the registration's wait acquired.</summary>
        public void GiveBack() => CooperativeThreading.GiveBack(_handle);

        public void Dispose() => Abandon(giveBack: false);
    }
}
