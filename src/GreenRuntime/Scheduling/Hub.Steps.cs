// Parks inside stackless greenlets: each blocking step parks an identity of its own.
//
// A stackless greenlet runs as a series of steps (its start, then each continuation posted to it). A step may block
// like stackful code does (library code after a ConfigureAwait(false) await making a patched blocking call, a lock
// waited for with the baton released): its frames stay on the carrier that ran it, which parks. Several steps of one
// greenlet can be out at once (the continuations of `Task.WhenAll(a, b)`, each blocking), so what parks is not the
// greenlet but a step of it: a special greenlet with its own park token, carrier and OutsideBaton mark. BeginPark
// creates it and makes it current; EndPark (or the released call's return, Hub.Blocking.cs) makes the greenlet current
// again. Kills and GreenTimeouts aim at the greenlet, which is Awaiting meanwhile: they fail its pending waits, and
// every blocking step is one (StepWait), woken with the exception as a stackful park would be.
//
// Rejected: parking the stackless greenlet itself. The second step's park overwrote the first one's token and
// carrier, so the first step's wake resumed the second step's thread, and the first step waited for ever (two
// HttpClient calls in Task.WhenAll on a HubGroup hung this way on the timer queue's lock, about one run in three).

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private const string StepName = "a blocking step of a stackless greenlet";

    /// <summary>Makes a step of the stackless <paramref name="owner"/> (the current greenlet) current, to be parked instead
    /// of it. Hub-only.</summary>
    private Greenlet BeginStep(Greenlet owner)
    {
        var step = Greenlet.CreateSpecial(this, StepName, GreenletState.Running);
        step.StepWait = new StepWait(this, owner, step);
        owner.TrackAsyncWait(step.StepWait, GreenTimeout.FlowScope);
        // Not running on the hub while its step is parked: a kill or timeout then fails the step's wait (KillGreenlet,
        // GreenTimeout: Awaiting).
        if (owner.State == GreenletState.Running) owner.State = GreenletState.Awaiting;
        _current = step;
        return step;
    }

    /// <summary>After the park of <paramref name="g"/> ended (or was cancelled): when it is a step, its greenlet is current
    /// again. Hub-only.</summary>
    private void EndStep(Greenlet g)
    {
        if (g.StepWait is not { Owner: var owner } wait) return;
        owner.UntrackAsyncWait(wait);
        _current = owner;
        // Another step of it may have run and ended meanwhile; this one goes on running.
        if (owner.State == GreenletState.Awaiting) owner.State = GreenletState.Running;
    }

    /// <summary>A parked step as one of its greenlet's pending waits: a kill or timeout of the greenlet wakes it with the
    /// exception (a released call: raised once the call returns, or interrupting a Monitor.Wait).</summary>
    internal sealed class StepWait(Hub hub, Greenlet owner, Greenlet step) : Sync.IAsyncWait
    {
        /// <summary>The stackless greenlet the step belongs to.</summary>
        public Greenlet Owner { get; } = owner;

        /// <summary>The step itself: the special greenlet that is parked (run info lists it under its greenlet).</summary>
        public Greenlet Step { get; } = step;

        public void Fail(Exception error) => hub.TryWake(new WakeToken(Step, Step.ParkSequence), null, error);
    }
}
