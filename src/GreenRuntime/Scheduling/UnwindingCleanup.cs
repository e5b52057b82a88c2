// Unwinding cleanup: whether a blocking point is reached from a finally (or fault) handler that a kill or timeout,
// already raised, runs on its way out. Level-triggered cancellation (Hub.Parking.cs, RaisePending) raises the exception
// again at every blocking point, which a thread's Thread.Interrupt never does: cleanup that blocks as the kill unwinds
// (a transaction's Dispose sending its rollback, a pooled connection's Close) met the kill again, swallowed it, and
// skipped the rest of its work (the connection never went back to its pool, the transaction kept its row locks). Such a
// blocking point waits instead, as on a thread; the catch handler that takes the kill, and everything after it, still
// raises, so `while (true) { try { ... } catch (Exception) { Thread.Sleep(100); } }` ends.
//
// Design: two facts of .NET's exception dispatch, both measured on .NET 10 (Tier 0, tiered, full optimization).
//   1. Handlers run on top of the dispatcher, above the frame that threw, until the catch handler returns: a blocking
//      point reached from one has its stack pointer some 15 KB below the throw's (the dispatcher's own frames), one
//      reached after the catch tens of bytes away. Greenlet.Raising notes the stack pointer; the depth of the
//      dispatcher is measured once, on first need, with an exception of our own (Calibrate).
//   2. A stack walk reports a handler's frame at the position its parent had when the exception passed (the call
//      that threw), and hides the frames in between. The first pass of the dispatch recorded the frames from the throw
//      to the frame whose catch takes it (the landing frame) in the exception's own stack trace. So the current stack
//      shows the landing frame and, deeper, the frames the exception came through, the last of them the one whose
//      handler runs. One of those deeper frames has its position inside the try of a finally or fault clause.
// The handlers of the landing frame itself (its catch, a finally of the same method) are not deeper than it: they raise,
// except in an async method whose only catch around the throw is the compiler's (the kill goes on to the method's task):
// its finally blocks are cleanup on the way out (SSH.NET downloads through an async method run synchronously, and the
// timeout was raised again in the close request of its file stream's Dispose).
//
// Rejected: the IL offset of the frame within the handler's region (MethodBody.ExceptionHandlingClauses). Because of 2,
// a finally run by an exception is never reported inside its handler region (0 of 400 calls in each JIT mode); only the
// copy of a finally that the optimizing JIT clones into the normal path is.
//
// Known limits (the kill is raised, as before, unless the first one applies): a catch handler of the landing frame that
// calls the very method the kill came through, stopped at the same call inside a try/finally (a retry of the failed
// call), is taken for that method's finally, and its blocking calls complete as on a thread; a finally of the landing
// frame itself (but an async method's, as above); a kill wrapped in another exception as it unwinds (the wrapper's
// trace is not the kill's); stackless
// greenlets (their frames are state machines the hub resumes). The cost, two stack walks, is paid only at a blocking
// point of a greenlet whose kill or timeout has been raised, and only while that exception's handlers run.

using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Scheduling;

internal static class UnwindingCleanup
{
    /// <summary>Half the stack the dispatcher takes under a handler (see the header); 0 until measured, -1: this runtime
    /// does not run handlers above the throw, so nothing is taken for cleanup.</summary>
    private static long s_handlerDepth;

    /// <summary>The current stack pointer, near enough: the address of a local of this frame.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static unsafe long StackPointer()
    {
        byte here = 0;
        return (long)&here;
    }

    /// <summary>Whether the caller runs in a finally or fault handler of a frame that <paramref name="inFlight"/>,
    /// thrown on this thread with the stack pointer at <paramref name="thrownAt"/>, unwinds before the frame whose catch
    /// takes it. See the header of this file.</summary>
    internal static bool RunsIn(Exception inFlight, long thrownAt)
    {
        if (s_handlerDepth == 0) s_handlerDepth = Calibrate();
        if (s_handlerDepth < 0 || thrownAt - StackPointer() < s_handlerDepth) return false; // no handler of it runs now
        var thrown = new StackTrace(inFlight, false).GetFrames();
        if (thrown.Length < 2) return false;
        var current = new StackTrace(1, false).GetFrames();
        var landing = thrown[^1];
        for (int i = 0; i < current.Length; i++)
        {
            if (!Same(current[i], landing)) continue;
            for (int deeper = 1; i - deeper >= 0 && thrown.Length - 1 - deeper >= 0 && Same(current[i - deeper], thrown[^(1 + deeper)]); deeper++)
            {
                if (InTryOfFinally(current[i - deeper])) return true;
            }
            return TakenByAsyncBuilder(current[i]) && InTryOfFinally(current[i]);
        }
        return false;
    }

    /// <summary>Whether the landing frame is an async method's state machine whose only catch around the throw is the one
    /// the compiler wraps the whole body in (it hands the exception to the method's task): the finally blocks of that
    /// method (a <c>using</c> in an async method run synchronously on the greenlet) are then cleanup the exception runs on
    /// its way out, not the handlers of a catch that takes it. A catch of the method's own code around the throw takes
    /// it: its handler raises, as anywhere.</summary>
    private static bool TakenByAsyncBuilder(StackFrame landing) =>
        landing.GetMethod() is { Name: nameof(IAsyncStateMachine.MoveNext) } method
        && typeof(IAsyncStateMachine).IsAssignableFrom(method.DeclaringType)
        && LowLevel.StackInspection.TryClausesAround(landing).Count(static c => c.Flags is ExceptionHandlingClauseOptions.Clause or ExceptionHandlingClauseOptions.Filter) == 1;

    private static bool Same(StackFrame a, StackFrame b) =>
        a.GetMethod() is { } method && method == b.GetMethod() && a.GetILOffset() == b.GetILOffset();

    /// <summary>Whether the frame stands inside the try of a finally or fault clause. Not the runtime's frames: its own
    /// cleanup is shielded, and the frames of a blocking call are the same whichever handler makes it.</summary>
    private static bool InTryOfFinally(StackFrame frame) =>
        frame.GetMethod() is { } method && !IsRuntime(method.DeclaringType?.Assembly)
        && LowLevel.StackInspection.TryClausesAround(frame).Any(static c => c.Flags is ExceptionHandlingClauseOptions.Finally or ExceptionHandlingClauseOptions.Fault);

    private static bool IsRuntime(Assembly? assembly) =>
        assembly == typeof(UnwindingCleanup).Assembly || assembly?.GetName().Name == "GreenRuntime.Patch";

    /// <summary>Measures how far below the throw a finally handler runs (fact 1 of the header), once.</summary>
    private static long Calibrate()
    {
        long thrownAt = 0, handlerAt = 0;
        try
        {
            try
            {
                ThrowNoting(ref thrownAt);
            }
            finally
            {
                handlerAt = StackPointer();
            }
        }
        catch (CalibrationException)
        {
        }
        long depth = thrownAt - handlerAt;
        return depth >= 2048 ? depth / 2 : -1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNoting(ref long thrownAt)
    {
        thrownAt = StackPointer();
        throw new CalibrationException();
    }

    private sealed class CalibrationException : Exception;
}
