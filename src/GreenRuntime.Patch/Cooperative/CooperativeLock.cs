using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="Lock"/> (C# 13 <c>lock</c> on a <c>Lock</c>) on a greenlet: its contended path releases the hub's
/// baton around the runtime's wait, like <see cref="CooperativeMonitor"/> and for the same reason (ownership is
/// per OS thread, and a greenlet always resumes on its own carrier).
/// </summary>
/// <remarks>A kill or timeout interrupts the wait as for a monitor (the runtime's <c>Lock</c> wait honours
/// <see cref="Thread.Interrupt"/> with nothing acquired and stays consistent), except where CoreLib itself enters the
/// lock: as for a monitor, CoreLib's bookkeeping around it is not written for an exception in the middle, so such a
/// wait goes on until the lock is taken and the kill is raised at the next blocking point (code that catches
/// <see cref="ThreadInterruptedException"/> around its enter is treated so for a kill, not for its thread's interrupt:
/// see <see cref="CooperativeMonitor"/>). A kill that interrupted
/// <c>CancellationTokenSource</c>'s <c>Dispose</c> (its registrations' lock, contended by a cancellation in progress)
/// left a disposed linked source registered on its parent for good: one per killed <c>HttpClient.Send</c>, kept, with
/// the dead greenlet, for the life of the client. The target is the NoInlining
/// <c>Lock.TryEnterSlow(int, ThreadId)</c>, which every contended <c>Enter</c>/<c>TryEnter</c> reaches after its
/// inlined fast path fails. It returns the owner's id on success and a zero id on failure; <c>ThreadId</c> is an
/// internal struct around one <c>uint</c>, mirrored here.</remarks>
internal static class CooperativeLock
{
    /// <summary>Passed exactly like the runtime's internal <c>Lock.ThreadId</c> (one uint).</summary>
    internal struct ThreadId
    {
        public uint Id;
    }

    internal delegate ThreadId TryEnterSlowFn(Lock self, int timeoutMs, ThreadId current);

    private static readonly Type? s_threadIdType = typeof(Lock).GetNestedType("ThreadId", BindingFlags.NonPublic);

    internal static readonly MethodInfo? TryEnterSlowMethod = s_threadIdType is null ? null
        : typeof(Lock).GetMethod("TryEnterSlow", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(int), s_threadIdType]);

    internal static readonly OriginalSlot<TryEnterSlowFn> TryEnterSlow = new(CallDirect);

    private static readonly Func<(Lock Self, int Ms, ThreadId Current), ThreadId> s_wait = static s =>
    {
        long started = Environment.TickCount64;
        int left = s.Ms;
        while (true)
        {
            try
            {
                return TryEnterSlow.Call(s.Self, left, s.Current);
            }
            catch (ThreadInterruptedException)
            {
                // Not a filter: inside one, the stack shows the exception dispatcher (CoreLib's) above the caller.
                if (!Cooperative.CallerKeepsInterruptsOut(typeof(Lock), Parking.ReleasedCallMetThreadInterrupt)) throw;
                // A kill or timeout inside CoreLib's own bookkeeping or past a retrying caller's handler (or the thread's
                // interrupt in an enter of CoreLib's): wait on for the rest of the time (see the remarks); the handshake
                // sends one interrupt per wait, and the kill or the thread's interrupt stays pending.
                left = CooperativeMonitor.TimeLeft(s.Ms, started);
            }
        }
    };

    // Waits in the runtime until the lock can be taken (false: the time ran out), takes it and gives it back at once
    // (CooperativeMonitor.WaitUntilFreeThenEnter).
    private static readonly Func<(PolledEnter Enter, int Ms), bool> s_waitUntilFree = static s =>
    {
        if (s_wait((s.Enter.Self, s.Ms, s.Enter.Current)).Id == 0) return false;
        s.Enter.Self.Exit();
        return true;
    };

    // Before patching, the original is reached through reflection (tests of the replacement without a detour).
    private static ThreadId CallDirect(Lock self, int timeoutMs, ThreadId current)
    {
        var boxed = Activator.CreateInstance(s_threadIdType!)!;
        s_threadIdType!.GetFields(BindingFlags.Instance | BindingFlags.NonPublic)[0].SetValue(boxed, current.Id);
#pragma warning disable CS9216 // the Lock is passed to reflection as its target, not locked as an object
        var result = TryEnterSlowMethod!.Invoke(self, [timeoutMs, boxed])!;
#pragma warning restore CS9216
        return new ThreadId { Id = (uint)s_threadIdType.GetFields(BindingFlags.Instance | BindingFlags.NonPublic)[0].GetValue(result)! };
    }

    /// <summary>Replaces <c>Lock.TryEnterSlow(int, ThreadId)</c>.</summary>
    public static ThreadId TryEnter(Lock self, int timeoutMs, ThreadId current)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || timeoutMs == 0)
            return TryEnterSlow.Call(self, timeoutMs, current);
        var acquired = TryEnterSlow.Call(self, 0, current);
        if (acquired.Id != 0) return acquired;
        if (Parking.YieldToLockHolders()) // see CooperativeMonitor.TryAgainAfterTheOthers
        {
            var again = new PolledEnter(self);
            if (s_tryEnterNow(again)) return again.Acquired;
        }
        var free = new PolledEnter(self) { Current = current };
        switch (CooperativeMonitor.WaitUntilFreeThenEnter(s_waitUntilFree, s_tryEnterNow, free, ref timeoutMs))
        {
            case CooperativeMonitor.FreeWait.Entered: return free.Acquired;
            case CooperativeMonitor.FreeWait.TimedOut: return default;
        }
        if (Parking.CanReleaseBaton)
            return Parking.RunReleased(s_wait, (self, timeoutMs, current), WaitReason.Lock, cancellationPoint: false, interruptible: true);
        // No carrier left to take over the hub: poll (CooperativeMonitor.PollEnter), not block with the baton.
        var poll = new PolledEnter(self);
        return CooperativeMonitor.PollEnter(s_tryEnterNow, poll, timeoutMs, typeof(Lock)) ? poll.Acquired : default;
    }

    private sealed class PolledEnter(Lock self)
    {
        public readonly Lock Self = self;
        public ThreadId Current;
        public ThreadId Acquired;
    }

    // With a zero timeout the original tries to take the lock only for a thread id not yet initialised (its fast path
    // was not tried then); for an initialised one it returns at once without trying. So each attempt passes the
    // uninitialised id: the original initialises it for this thread, takes the lock if it is free, and returns the id.
    // (Recursion was answered by the first attempt, made with the caller's id.)
    private static readonly Func<PolledEnter, bool> s_tryEnterNow = static p => (p.Acquired = TryEnterSlow.Call(p.Self, 0, default)).Id != 0;
}
