// Ambient context: which ExecutionContext (AsyncLocal values, Activity.Current, culture) a thread of the hub
// runs under at each moment.
//
// Glossary
//   context   System.Threading.ExecutionContext: the immutable bag of AsyncLocal values that .NET flows into
//             Thread.Start, Task.Run and across awaits. CultureInfo.CurrentCulture and Activity.Current live in it.
//   default   the empty context (ExecutionContext.Default in the BCL, not public): what a thread-pool thread runs
//             under between work items.
//
// The rule, like Thread.Start and Task.Run: a greenlet runs its whole body under the context captured when it was
// created (Spawn, SpawnLater, new Greenlet); what the body changes stays in that greenlet. Concretely:
//   1. Greenlet's constructor captures ExecutionContext.Capture() (one thread-field read).
//   2. Before a stackful body or the first step of a stackless body runs on a free carrier, the carrier's thread
//      switches to that context; when the body returns, the thread goes back to the default context. A free
//      carrier (a pooled thread with no greenlet stack on it) is therefore always in the default context when it
//      picks its next item: nothing of one greenlet is visible to the next one on the same thread.
//   3. A stackful greenlet that parks keeps its context on its own carrier thread (the context is per thread, and
//      the thread is the greenlet's while it is suspended). The scheduler may run hub callbacks (timers, links,
//      Hub.Post actions) on that thread meanwhile: they run under the default context, and the greenlet's context
//      is put back before the thread returns into it, so a callback can neither see nor change a greenlet's values
//      (also when the greenlet parked inside ExecutionContext.SuppressFlow, whose context Capture does not return).
//      The same holds for the thread's SynchronizationContext, which a stackful greenlet may set for its own awaits
//      (the ASP.NET Core integration does): the scheduler runs with none while the greenlet is parked (Hub.EndPark),
//      so timers, callbacks and the reactor's completions never post into it (.NET would also queue every
//      ConfigureAwait(false) continuation they complete to the thread pool, seeing a foreign context), and the
//      greenlet's is put back when it resumes. A body that ends leaves none on its carrier (step 2).
//   4. Stackless continuations posted by await restore their own captured context (the async method builder does);
//      anything else posted through a stackless greenlet's synchronization context runs under the greenlet's
//      creation context, and the thread is reset to the default context after it.
// Cost: the default context flows as a reference comparison; a non-default one costs a Restore (a few stores,
// plus AsyncLocal change notifications if any are registered) at start and end.
//
// Rejected: capturing at Start rather than at creation (Thread captures at Start, but gevent users create and
// start in one call, and Task.Run captures at the call: the difference only matters for `new Greenlet(...)` then
// Start from elsewhere, where the creator's context is the least surprising); a per-greenlet copy of
// [ThreadStatic] fields (impossible without knowing them: [ThreadStatic] stays per carrier thread, as on the
// thread pool; GreenletLocal<T> is the per-greenlet storage).

namespace GreenRuntime.Scheduling;

internal static class AmbientContext
{
    /// <summary>
    /// The default (empty) context. The BCL does not expose it, but <see cref="ExecutionContext.Capture"/> returns it
    /// on a thread that never had a context: such a thread is started once, without flowing ours, to read it.
    /// </summary>
    public static readonly ExecutionContext Default = CaptureDefault();

    private static ExecutionContext CaptureDefault()
    {
        ExecutionContext? captured = null;
        var thread = new Thread(() => captured = ExecutionContext.Capture()) { IsBackground = true, Name = "GreenRuntime context probe" };
        RuntimeThread.Start(thread); // unsafe: the probe must not inherit the caller's context
        thread.Join();
        return captured ?? throw new InvalidOperationException("Internal error: a fresh thread reported no execution context; the default context could not be determined.");
    }

    /// <summary>Checks step 2's invariant: a free carrier picks its next item in the default context, with no synchronization context.</summary>
    [System.Diagnostics.Conditional("DEBUG")]
    public static void AssertDefault(Carrier carrier)
    {
        var now = ExecutionContext.Capture();
        if (now != null && !ReferenceEquals(now, Default))
            throw Sync.SyncLock.InvariantBroken($"Invariant broken: free carrier #{carrier.Id} is about to run an item in a greenlet's ExecutionContext instead of the default one (a context would leak from one greenlet to the next).");
        if (SynchronizationContext.Current is { } sync)
            throw Sync.SyncLock.InvariantBroken($"Invariant broken: free carrier #{carrier.Id} is about to run an item under a greenlet's {sync.GetType().Name} (a synchronization context would leak from one greenlet to the next).");
    }

    /// <summary>Switches the calling thread to <paramref name="context"/> (null = the default). Step 2 of the header.</summary>
    public static void Enter(ExecutionContext? context)
    {
        context ??= Default;
        if (!ReferenceEquals(ExecutionContext.Capture(), context))
            ExecutionContext.Restore(context);
    }

    /// <summary>
    /// Puts the calling thread back in the default context, with no synchronization context, if anything left it
    /// elsewhere: a body that installed a synchronization context (a UI-style one, say) must not leave it on the
    /// pooled thread, where the next greenlet and the scheduler's own completions would post to it.
    /// </summary>
    public static void Reset()
    {
        if (!ReferenceEquals(ExecutionContext.Capture(), Default))
            ExecutionContext.Restore(Default);
        if (SynchronizationContext.Current != null)
            SynchronizationContext.SetSynchronizationContext(null);
    }

    /// <summary>
    /// Step 3 of the header: switches a thread that may be keeping a greenlet's context to the default one for a hub
    /// callback, and returns what to give back to it afterwards.
    /// </summary>
    /// <remarks>A greenlet parked inside <see cref="ExecutionContext.SuppressFlow"/> keeps its values in a context whose
    /// flow is suppressed, which <see cref="ExecutionContext.Capture"/> does not return: the flow is restored for the
    /// switch and suppressed again after the callback (the greenlet's own AsyncFlowControl then undoes it as usual).
    /// Left as it was, the callback ran in the greenlet's context and could read and change its values.</remarks>
    public static SavedContext EnterForCallback()
    {
        var current = ExecutionContext.Capture();
        bool suppressed = current == null; // Capture returns null exactly while the flow is suppressed
        if (suppressed)
        {
            ExecutionContext.RestoreFlow();
            current = ExecutionContext.Capture();
        }
        if (current == null || ReferenceEquals(current, Default)) return new SavedContext(null, suppressed);
        ExecutionContext.Restore(Default);
        return new SavedContext(current, suppressed);
    }

    /// <summary>Ends <see cref="EnterForCallback"/>: gives the thread back the context it had, or the default one.</summary>
    public static void LeaveCallback(SavedContext saved)
    {
        if (saved.Context != null) ExecutionContext.Restore(saved.Context);
        else if (ExecutionContext.Capture() is { } now && !ReferenceEquals(now, Default)) ExecutionContext.Restore(Default);
        if (saved.FlowSuppressed && !ExecutionContext.IsFlowSuppressed()) ExecutionContext.SuppressFlow();
    }

    /// <summary>What <see cref="EnterForCallback"/> took from the thread.</summary>
    public readonly record struct SavedContext(ExecutionContext? Context, bool FlowSuppressed);
}
