using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <c>WaitHandle.WaitAny</c> and <c>WaitHandle.WaitAll</c> (every synchronous overload) on a greenlet, at their
/// private funnel <c>WaitHandle.WaitMultiple(ReadOnlySpan&lt;WaitHandle&gt;, bool, int)</c>.
/// </summary>
/// <remarks>
/// <para>Both first ask the original with a zero timeout, which also throws the original's exceptions for bad
/// arguments (empty or null array, more than 64 handles, duplicates in WaitAll, disposed handles). A set that
/// contains a <see cref="Mutex"/> is waited for by the greenlet's own thread with the hub's baton released
/// (Hub.Blocking.cs): a mutex is owned by the thread that acquires it and cannot be acquired on the greenlet's
/// behalf by a thread-pool wait.</para>
/// <para>Any other set is waited for the same way. Either way a kill or timeout interrupts the original wait
/// (<c>Thread.Interrupt</c>), and what it acquired just as a kill came is given back (a mutex released by the thread
/// that acquired it), or kept where that cannot be done exactly (ReleasedHandleWait). Only when no carrier is left to take
/// over the hub do the registered waits below stand in, and a set with a mutex is polled instead (the original with a
/// zero timeout on the greenlet's own thread, between parks of 1–20 ms: all or none for WaitAll).</para>
/// <para>WaitAny: every handle is registered with <c>ThreadPool.RegisterWaitForSingleObject</c> (a
/// <see cref="HandleWait"/> each). The greenlet parks until one registration fires or the timeout elapses.
/// Then every registration is ended; each one that acquired its handle in the meantime (an auto-reset event
/// reset, a semaphore decremented) reports it exactly once. The lowest such index is the result, like the
/// original's lowest signalled index; every other acquisition is given back (Set / Release). So exactly one
/// handle is acquired, also when a timeout races with a signal. A kill gives back every acquisition. A
/// registration whose wait is satisfied just as the greenlet ends it gives its signal back from its
/// thread-pool callback, a moment later (as for WaitOne).</para>
/// <para>WaitAll must acquire all handles atomically, which registered waits (one handle each) cannot do. It
/// parks until any handle is signalled (registrations as above, all given back at once), then asks the
/// original <c>WaitAll(handles, 0)</c>, which acquires all or none. A handle that fired once is not
/// registered again in the same call: a manual-reset event that stays set would otherwise wake the greenlet
/// at once, forever, and an auto-reset event or semaphore is then taken and given back at most once per call
/// (between the signal and the greenlet's next turn, another waiter's zero-timeout wait can miss it). Each
/// round is bounded by a pause of 1 ms doubling to 20 ms, so handles no longer registered are still polled.</para>
/// </remarks>
internal static partial class CooperativeThreading
{
    internal delegate int WaitMultipleFn(ReadOnlySpan<WaitHandle> waitHandles, bool waitAll, int millisecondsTimeout);

    internal static readonly MethodInfo? WaitMultipleMethod = typeof(WaitHandle).GetMethod("WaitMultiple", BindingFlags.NonPublic | BindingFlags.Static, [typeof(ReadOnlySpan<WaitHandle>), typeof(bool), typeof(int)]);

    internal static readonly OriginalSlot<WaitMultipleFn> WaitMultipleSlot = new(
        WaitMultipleMethod?.CreateDelegate<WaitMultipleFn>()
        ?? (static (h, all, ms) => all ? (WaitHandle.WaitAll(h.ToArray(), ms) ? 0 : WaitHandle.WaitTimeout) : WaitHandle.WaitAny(h.ToArray(), ms)));

    /// <summary>Replaces the private <c>WaitHandle.WaitMultiple(ReadOnlySpan&lt;WaitHandle&gt;, bool, int)</c>.</summary>
    public static int WaitMultiple(ReadOnlySpan<WaitHandle> waitHandles, bool waitAll, int millisecondsTimeout)
    {
        int mutexes = 0;
        foreach (var h in waitHandles)
            if (h is Mutex) mutexes++;
        if (mutexes == 0) return WaitMultipleCore(waitHandles, waitAll, millisecondsTimeout);
        NoteMutexWait();
        try
        {
            int result = WaitMultipleCore(waitHandles, waitAll, millisecondsTimeout);
            if (result != WaitHandle.WaitTimeout) NoteMutexAcquired(waitAll ? mutexes : (uint)result < (uint)waitHandles.Length && waitHandles[result] is Mutex ? 1 : 0);
            return result;
        }
        // A WaitAll that reports an abandoned mutex has acquired every handle; a WaitAny, the abandoned mutex.
        catch (AbandonedMutexException) when (NoteMutexAcquired(waitAll ? mutexes : 1))
        {
            throw; // never reached: the filter only counts
        }
    }

    private static int WaitMultipleCore(ReadOnlySpan<WaitHandle> waitHandles, bool waitAll, int millisecondsTimeout)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || millisecondsTimeout is 0 or < -1) return WaitMultipleSlot.Call(waitHandles, waitAll, millisecondsTimeout);
        int now = WaitMultipleSlot.Call(waitHandles, waitAll, 0);
        if (now != WaitHandle.WaitTimeout) return now;
        var handles = waitHandles.ToArray(); // the registrations outlive no frame, but lambdas cannot hold a span
        bool mutex = handles.Any(h => h is Mutex);
        // As WaitOne: the original wait on the greenlet's own thread, woken directly and atomic as the original.
        if (Parking.CanReleaseBaton) return new ReleasedWaitMultiple(handles, waitAll, millisecondsTimeout).Run(mutex);
        if (mutex) // no carrier left, and only this thread can own a mutex: polled; WaitAll(0) acquires all or none
        {
            int acquired = WaitHandle.WaitTimeout;
            return PollMutex(hub, () => (acquired = WaitMultipleSlot.Call(handles, waitAll, 0)) != WaitHandle.WaitTimeout, millisecondsTimeout)
                ? acquired : WaitHandle.WaitTimeout;
        }
        return waitAll ? WaitAllOnHub(hub, handles, millisecondsTimeout) : WaitAnyOnHub(hub, handles, millisecondsTimeout);
    }

    /// <summary>A released <c>WaitAny</c>/<c>WaitAll</c>: it records what it acquired, to give back after a kill.</summary>
    private sealed class ReleasedWaitMultiple(WaitHandle[] handles, bool waitAll, int millisecondsTimeout) : ReleasedHandleWait<int>
    {
        private int _result = WaitHandle.WaitTimeout;

        protected override int Wait() => _result = WaitMultipleSlot.Call(handles, waitAll, millisecondsTimeout);

        protected override bool Acquired(out int result) => (result = _result) != WaitHandle.WaitTimeout;

        protected override bool CanGiveBack => waitAll ? handles.All(CanGiveBackExactly) : _result == WaitHandle.WaitTimeout || CanGiveBackExactly(handles[_result]);

        protected override void GiveBackAcquired()
        {
            if (_result == WaitHandle.WaitTimeout) return;
            if (waitAll)
                foreach (var handle in handles) GiveBack(handle);
            else
                GiveBack(handles[_result]);
        }
    }

    private static int WaitAnyOnHub(Hub hub, WaitHandle[] handles, int millisecondsTimeout)
    {
        var waits = Register(handles, null);
        try
        {
            Cooperative.Park(hub, Task.WhenAny(waits.Select(w => w!.Signalled)), Cooperative.WaitTimeout(millisecondsTimeout), WaitReason.Event);
        }
        catch
        {
            EndAll(waits, giveBack: true);
            throw;
        }
        // Timed out or signalled: whatever was acquired in the meantime is decided here, exactly once per handle.
        int chosen = WaitHandle.WaitTimeout;
        for (int i = 0; i < waits.Length; i++)
        {
            if (!waits[i]!.Abandon(giveBack: false)) continue;
            if (chosen == WaitHandle.WaitTimeout) chosen = i;
            else waits[i]!.GiveBack();
        }
        AssertAtMostOneKept(chosen, handles.Length);
        return chosen;
    }

    private static int WaitAllOnHub(Hub hub, WaitHandle[] handles, int millisecondsTimeout)
    {
        var time = hub.Options.TimeProvider;
        long start = time.GetTimestamp();
        var backoff = new PollBackoff();
        var skip = new bool[handles.Length];
        while (true)
        {
            var left = millisecondsTimeout < 0 ? TimeSpan.MaxValue : TimeSpan.FromMilliseconds(millisecondsTimeout) - time.GetElapsedTime(start);
            if (left <= TimeSpan.Zero) return WaitHandle.WaitTimeout;
            var waits = Register(handles, skip);
            var signals = waits.Where(w => w is not null).Select(w => w!.Signalled).ToList();
            try
            {
                var round = backoff.Next(left);
                if (signals.Count == 0) Green.Sleep(round);
                else Cooperative.Park(hub, Task.WhenAny(signals), round, WaitReason.Event);
            }
            catch
            {
                EndAll(waits, giveBack: true);
                throw;
            }
            // Give every acquisition back before the atomic attempt, which must find the handles as they are.
            bool anyFired = false;
            for (int i = 0; i < waits.Length; i++)
            {
                bool fired = waits[i]?.Abandon(giveBack: true) ?? false;
                skip[i] |= fired;
                anyFired |= fired;
            }
            if (WaitMultipleSlot.Call(handles, true, 0) != WaitHandle.WaitTimeout) return 0;
            if (!anyFired) backoff.Grow();
        }
    }

    /// <summary>Registers a consuming wait on every handle not skipped; on failure, ends those already made.</summary>
    private static HandleWait?[] Register(WaitHandle[] handles, bool[]? skip)
    {
        var waits = new HandleWait?[handles.Length];
        try
        {
            for (int i = 0; i < handles.Length; i++)
            {
                if (skip is null || !skip[i]) waits[i] = new HandleWait(handles[i], consumes: true);
            }
        }
        catch
        {
            EndAll(waits, giveBack: true);
            throw;
        }
        return waits;
    }

    private static void EndAll(HandleWait?[] waits, bool giveBack)
    {
        foreach (var w in waits) w?.Abandon(giveBack);
    }

    [System.Diagnostics.Conditional("DEBUG")]
    private static void AssertAtMostOneKept(int chosen, int count) =>
        System.Diagnostics.Debug.Assert(chosen == WaitHandle.WaitTimeout || (uint)chosen < (uint)count, "WaitAny keeps at most one acquisition, at a valid index.");
}
