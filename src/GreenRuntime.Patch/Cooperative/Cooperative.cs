// Cooperative implementations: what a patched blocking call does instead of blocking. They use only the
// core's public API (GreenRuntime.LowLevel: Parking, CooperativeSocket, IoBuffers), as any extension would.
//
// Glossary
//   replacement   a static method in this folder that a detour sends every call of a BCL method to
//                 (`this` first for instance methods). It has exactly the BCL method's signature.
//   original      the BCL method's own code, reached through an OriginalSlot (never by calling the patched
//                 method again, which would come straight back here).
//   parking hub   the calling thread's hub when the caller is a greenlet that may park here: the thread has a
//                 hub, is not inside a hub callback, and is not inside one of our own cleanup waits.
//
// Design chosen: every replacement starts with the same test. Off a parking hub (any ordinary thread,
// a hub callback, our own cleanup) it calls the original, so behaviour there is exactly the BCL's. That test
// is one [ThreadStatic] read when the thread has no hub (the common case); the hottest replacements then
// call the original's trampoline through a delegate* (OriginalSlot.Entry) rather than a delegate. On a
// parking hub it first tries the operation without blocking (a zero timeout, or an async operation that
// completes inline) and otherwise starts the .NET asynchronous equivalent and parks only the calling
// greenlet until it completes (Parking.WaitForTask), honouring the call's own timeout. Finally it asks the
// original with a zero timeout, or reads the finished task, so results, exceptions and side effects are the
// original's.
//
// Kill and timeout: the park throws (GreenletExit) or returns early. The pending operation is then cancelled.
// Where it could still write into caller memory (a pinned span) we wait for it to finish before the frame
// that pinned the memory unwinds (a short blocking wait, under Bypass so it cannot re-enter us). Where it
// only writes into memory we own, it is abandoned.
//
// Rejected designs
//   * Polling with Green.Sleep for everything: cheap to write, but adds latency to every wait. Used only
//     where .NET offers no completion signal at all (Thread.Join, Socket.Poll/Select).
//   * Doing real work on the hub thread for file I/O (what gevent does): a cold read blocks every greenlet
//     of the hub. We offload to the thread pool instead.

using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

/// <summary>Shared plumbing of the cooperative replacements: where parking is allowed, and parking on a task.</summary>
internal static class Cooperative
{
    /// <summary>
    /// The hub the caller may park on, or null when the call must behave exactly like the original: no hub on
    /// this thread, inside a hub callback (which must not block), a disposed hub, or inside <see cref="Bypass"/>.
    /// </summary>
    /// <remarks>Also null inside a static constructor the runtime started natively (<see cref="NativeClassInit"/>): there the
    /// blocking call runs as the original, holding the baton, since a greenlet that touches the class would wait for it
    /// holding the baton too.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Hub? ParkingHub() => Parking.ParkingHub() is { } hub && !NativeClassInit.Inside() ? hub : null;

    /// <summary>
    /// <see cref="ParkingHub"/> for a wait (an event, a semaphore, a handle, a join, a task), which first gives way when
    /// the hub's blocking monitor asks (<see cref="Parking.GiveWay"/>). A wait already satisfied does not park, so a
    /// loop of them held the baton for good: Lucene.Net's <c>while (gen > searchingGen) available.WaitOne();</c> around
    /// an event left set spun on the hub while the thread that would end it waited for a flush by a greenlet the hub no
    /// longer ran (3 runs of 11 of a near-real-time search hung), and so does a <c>Wait(0)</c> poll. Not a
    /// cancellation point: a satisfied wait never was one.
    /// </summary>
    public static Hub? WaitingHub()
    {
        var hub = ParkingHub();
        if (hub is not null) Parking.GiveWay();
        return hub;
    }

    /// <summary>
    /// <see cref="ParkingHub"/> without its warning for calls inside hub callbacks, and so without side effects: for
    /// replacements of runtime helpers that anything may reach, the warning's own code included (class
    /// initialisation), which must never allocate, log or initialise a class before deciding.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Hub? ParkingHubSilent() => Parking.ParkingHubSilent();

    /// <summary>
    /// Makes every patched method called on this thread run its original until the scope is disposed: for our
    /// own short cleanup waits, which must not park (a kill may already be pending) and must not re-enter us.
    /// </summary>
    public static SuppressedCooperation Bypass() => Parking.SuppressCooperation();

    /// <summary>
    /// Parks the current greenlet until <paramref name="task"/> completes or <paramref name="timeout"/> elapses.
    /// If the park throws (the greenlet was killed), <paramref name="cancel"/> is cancelled and, when
    /// <paramref name="drain"/>, the task is awaited (blocking) before the exception propagates, so that it no
    /// longer touches memory of the unwinding frame.
    /// </summary>
    /// <returns>Whether the task has completed (false: the timeout elapsed first).</returns>
    public static bool Park(Hub hub, Task task, TimeSpan? timeout, WaitReason reason, CancellationTokenSource? cancel = null, bool drain = false) =>
        Parking.WaitForTask(task, timeout, reason, cancel, drain);

    /// <summary>Socket timeouts: 0 and -1 mean infinite.</summary>
    public static TimeSpan? SocketTimeout(int milliseconds) => milliseconds <= 0 ? null : TimeSpan.FromMilliseconds(milliseconds);

    /// <summary>Wait timeouts: -1 means infinite.</summary>
    public static TimeSpan? WaitTimeout(long milliseconds) => milliseconds < 0 ? null : TimeSpan.FromMilliseconds(milliseconds);

    /// <summary>
    /// A task that completes when <paramref name="task"/> completes or <paramref name="token"/> is cancelled.
    /// Dispose the registration afterwards.
    /// </summary>
    public static Task OrCancelled(Task task, CancellationToken token, out CancellationTokenRegistration registration)
    {
        registration = default;
        if (!token.CanBeCanceled) return task;
        var either = new TaskCompletionSource(TaskCreationOptions.None);
        registration = token.UnsafeRegister(static s => ((TaskCompletionSource)s!).TrySetResult(), either);
        task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => either.TrySetResult());
        return either.Task;
    }

    /// <summary>
    /// Runs a synchronous call whose operation holds a shared resource for its caller (a pooled connection it is queued
    /// for, a semaphore's waiter count) with a token that the greenlet's kill and open timeouts cancel as well
    /// (<see cref="Parking.LinkCancellation"/>), so the operation withdraws as it does on a thread whose token was
    /// cancelled. The cancellation they caused is raised as the kill or timeout itself; one of
    /// <paramref name="callerToken"/> stays the caller's <see cref="OperationCanceledException"/>.
    /// </summary>
    public static TResult WithKillToken<TState, TResult>(TState state, CancellationToken callerToken, Func<TState, CancellationToken, TResult> call)
    {
        var token = Parking.LinkCancellation(callerToken, out var linked);
        try
        {
            return call(state, token);
        }
        catch (OperationCanceledException) when (!callerToken.IsCancellationRequested && Parking.CancellationPending)
        {
            Parking.Yield(); // a cancellation point: raises the kill or timeout that cancelled the operation
            throw;
        }
        finally
        {
            linked?.Dispose();
        }
    }

    /// <summary>Whether the code that called <paramref name="api"/> is CoreLib's: the first frame of the stack that is
    /// neither the runtime's (this assembly, the core one) nor <paramref name="api"/>'s own, nor <see cref="SpinWait"/>'s.
    /// Costs a stack walk: ask only when it matters (a kill is pending). Not from an exception filter, whose stack shows
    /// CoreLib's dispatcher on top. Frames the JIT inlined are not on the stack.</summary>
    /// <remarks>SpinWait is CoreLib's, but it is a tool, not bookkeeping: what matters is who spins with it. CoreLib's own
    /// primitives do (SemaphoreSlim, ManualResetEventSlim, SpinLock), and so do polling loops of other code
    /// (<c>SpinWait.SpinUntil</c> in user code, <c>NamedPipeClientStream.Connect</c> waiting for its pipe to appear),
    /// which must stay killable.</remarks>
    public static bool CalledByCoreLib(Type api) => Caller(api) is { } frame && frame.GetMethod()!.DeclaringType!.Assembly == typeof(object).Assembly;

    /// <summary>Whether a kill or timeout must not interrupt the lock enter that the caller of <paramref name="api"/>
    /// makes: the caller is CoreLib (<see cref="CalledByCoreLib"/>), or its call stands in a <c>try</c> that catches
    /// <see cref="ThreadInterruptedException"/> (a handler of that type, or a filter, which may test for it). Code that
    /// catches the interrupt of its lock enter retries it (Lucene.Net's <c>UninterruptableMonitor</c>, around every lock
    /// it takes, also in <c>finally</c> blocks that do its flush bookkeeping): a kill, which it does not catch, would
    /// leave that bookkeeping half done, as no interrupt of a thread does. Costs a stack walk, as CalledByCoreLib.</summary>
    /// <param name="api">The API whose frames to look past.</param>
    /// <param name="threadInterrupt">The interrupt is the greenlet's thread's (<see cref="Parking.ReleasedCallMetThreadInterrupt"/>),
    /// not a kill's or timeout's: then only a CoreLib caller keeps it out. A handler of
    /// <see cref="ThreadInterruptedException"/> is written for that very exception, and gets it from the enter, as a
    /// thread's does; code that retries (Lucene.Net's) interrupts its thread again once it holds the lock, which leaves the
    /// interrupt pending for the next wait. Kept out there too, a user's <c>lock</c> in a <c>try</c> that catches the
    /// interrupt to give up entered instead, and the interrupt came out of its next wait, outside that handler.</param>
    internal static bool CallerKeepsInterruptsOut(Type api, bool threadInterrupt = false) => CallerOf(api) switch
    {
        InterruptCaller.CoreLib => true,
        InterruptCaller.RetryingHandler => !threadInterrupt,
        _ => false,
    };

    /// <summary>Who calls <paramref name="api"/>, as far as interrupts of its lock enter go (see
    /// <see cref="CallerKeepsInterruptsOut"/>), in one stack walk.</summary>
    internal static InterruptCaller CallerOf(Type api)
    {
        if (Caller(api) is not { } frame) return InterruptCaller.Other;
        if (frame.GetMethod()!.DeclaringType!.Assembly == typeof(object).Assembly) return InterruptCaller.CoreLib;
        return StackInspection.TryClausesAround(frame).Any(static c =>
            c.Flags == ExceptionHandlingClauseOptions.Filter
            || (c.Flags == ExceptionHandlingClauseOptions.Clause && c.CatchType == typeof(ThreadInterruptedException)))
            ? InterruptCaller.RetryingHandler
            : InterruptCaller.Other;
    }

    /// <summary>The first frame of the stack that is neither the runtime's nor <paramref name="api"/>'s own, nor <see cref="SpinWait"/>'s.
    /// Costs a stack walk, as CalledByCoreLib.</summary>
    internal static System.Diagnostics.StackFrame? Caller(Type api)
    {
        foreach (var frame in new System.Diagnostics.StackTrace(1, false).GetFrames())
        {
            var type = frame.GetMethod()?.DeclaringType;
            if (type is null || type.Assembly == typeof(Cooperative).Assembly || type.Assembly == typeof(Hub).Assembly || type == api || type == typeof(SpinWait))
                continue;
            return frame;
        }
        return null;
    }

    /// <summary>For an asynchronous operation a stackful greenlet that may park starts (and legacy code waits for with
    /// <c>.Result</c>): a token that <paramref name="cancellationToken"/>, the greenlet's kill and its open timeouts cancel,
    /// and its source, to dispose once the operation is over (<see cref="DisposeAfter"/>). False elsewhere, including in a
    /// stackless greenlet, whose code passes its own token.</summary>
    public static bool LinkOnStackful(CancellationToken cancellationToken, out CancellationToken token, out CancellationTokenSource? linked)
    {
        token = cancellationToken;
        linked = null;
        if (ParkingHub() is null || Green.Current.IsStackless) return false;
        token = Parking.LinkCancellation(cancellationToken, out linked);
        return true;
    }

    /// <summary>Disposes <paramref name="linked"/> once <paramref name="operation"/> is over; returns the operation.</summary>
    public static T DisposeAfter<T>(T operation, CancellationTokenSource? linked)
        where T : Task
    {
        if (linked is null) return operation;
        Parking.TieCancellation(operation, linked); // an operation other greenlets wait for is not the starter's to cancel
        if (operation.IsCompleted) linked.Dispose();
        else operation.ContinueWith(static (_, source) => ((CancellationTokenSource)source!).Dispose(), linked, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return operation;
    }

    /// <summary>
    /// Parks with growing pauses (<see cref="PollBackoff"/>: 1 ms doubling to 20 ms) until <paramref name="done"/> returns true or the
    /// timeout elapses. For waits that .NET offers no completion signal for.
    /// </summary>
    /// <returns>Whether <paramref name="done"/> returned true.</returns>
    public static bool PollUntil(Hub hub, Func<bool> done, TimeSpan? timeout) => Parking.PollUntil(done, timeout);
}

/// <summary>Who makes a lock enter, for the interrupts that may end it (<see cref="Cooperative.CallerOf"/>).</summary>
internal enum InterruptCaller
{
    /// <summary>Code that neither is CoreLib nor catches the interrupt.</summary>
    Other,

    /// <summary>CoreLib, whose bookkeeping around the enter is not written for an exception in the middle.</summary>
    CoreLib,

    /// <summary>Code whose call stands in a <c>try</c> that catches <see cref="ThreadInterruptedException"/> (or has a filter).</summary>
    RetryingHandler,
}
