// The scheduler: how the baton moves between the threads of one hub.
//
// Glossary
//   hub       the scheduler state of one logical thread: ready queue, timers, inbox (this type).
//   greenlet  a unit of cooperative work. Stackful greenlets run synchronous code; stackless greenlets run
//             async code whose continuations are posted to the hub.
//   carrier   an OS thread that runs greenlet or hub code. A suspended stackful greenlet keeps its stack on
//             its carrier, which is parked meanwhile. A carrier with no suspended greenlet on it is "free".
//   baton     the right to run code of the hub. Exactly one carrier holds it (Invariant 1); all others of
//             the hub are parked in their Parker.
//   inbox     a thread-safe queue through which other threads (I/O completions, Post, Kill) reach the hub.
//
// Design chosen: the hub is a data structure, not a thread. The thread that gives up the baton runs the
// scheduler itself (Schedule below) and hands the baton directly to the next carrier: a stackful switch is
// one futex hand-off (~3 µs), not two as a greenlet -> hub thread -> greenlet design would cost.
//
// Rejected designs
//   * A dedicated hub thread (gevent's shape): two hand-offs per switch.
//   * Running every greenlet on the thread that happens to hold the baton: a greenlet that blocks in
//     synchronous code would pin every greenlet below it on that thread's stack; CoreCLR cannot switch
//     stacks on one thread (no fibers), so a suspended stackful greenlet must own a parked thread.
//   * Monitor/SemaphoreSlim hand-offs: they spin, and degrade to milliseconds with thousands of parked
//     threads (measured: 150 µs–2.4 ms per hop with thousands parked).
//
// The protocol (Schedule), run by the thread holding the baton whenever the code it runs cannot go on:
//   1. Drain the inbox into the ready queue.
//   2. Fire due timers (hub callbacks: they may wake greenlets, never block).
//   3. Take the next ready item.
//      a. A callback runs here and now, whatever this thread keeps on its stack (it cannot block).
//      b. Resuming greenlet G: if G's stack is on this very thread, return into it. Otherwise wake G's
//         carrier (handing it the baton) and park this thread: until its own greenlet is resumed if it
//         keeps one, or back in the carrier pool if it is free.
//      c. Starting a greenlet or running a stackless continuation: if this thread is free it runs the item
//         inline (a greenlet that never blocks costs about a function call); if it keeps a suspended stack
//         it must not (the new code could block on top of it), so it hands the baton and the item to a
//         free pooled carrier and parks.
//      Which item is next: arrival order, except where taking another saves a hand-off (Hub.Order.cs).
//   4. Nothing ready: wait for the inbox until the next timer's deadline — in epoll_wait, together with the
//      sockets greenlets wait on, once the hub has a reactor (Io/Reactor.cs). If nothing at all can ever wake
//      anyone, throw LoopExitException into the main greenlet.
//   Between steps, a hub with a reactor polls it without waiting every 64 steps, so busy greenlets cannot
//   starve I/O.
//
// Where code may run: everything in this file runs only on the baton holder, except PostItem and the
// Parker calls, which any thread may make.
//
// Frames under a parked greenlet. Every garbage collection walks the stack of every parked carrier, at about
// 0.5 µs per managed frame on the 2-vCPU VM (1,000 greenlets parked 5, 50 and 100 frames deep: a gen-0 collection
// took 10, 25 and 50 ms), and a server keeps a parked carrier per request in flight. So the small steps of the
// scheduler between a park and the thread's sleep, and between a carrier's loop and a greenlet's body, are inlined
// ([MethodImpl(AggressiveInlining)], marked "no frame under a parked greenlet"): the runtime's frames on the stack of
// a greenlet parked in Event.Wait went from 16 to 10 (dotnet-stack, Release build).

using System.Diagnostics;
using System.Runtime.CompilerServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private Greenlet _current = null!;
    private int _callbackDepth;

    /// <summary>
    /// True while the baton holder runs scheduler code rather than greenlet code (Invariant 2: the scheduler
    /// never parks). Written only by the baton holder: set on entering Schedule, cleared on every path that
    /// returns into greenlet code.
    /// </summary>
    private bool _inScheduler;
    private int _batonHolder;

    /// <summary>Stackless greenlets that are alive and awaiting something: they keep LoopExit away.</summary>
    private int _awaitingStackless;

    /// <summary>Cooperative waits on something outside the hub (tasks, I/O): they keep LoopExit away.</summary>
    private int _pendingExternal;

    /// <summary>Pooled carriers rented by this hub and not yet returned (the main thread is not counted).</summary>
    private int _carriersInUse;

    /// <summary>The greenlet running now on this hub (the hub greenlet inside callbacks).</summary>
    internal Greenlet CurrentGreenlet => _current;

    /// <summary>
    /// Runs the scheduler on the baton holder <paramref name="self"/> until either the greenlet this thread
    /// keeps (<c>self.Owner</c>) is resumed, or — for a free carrier — the baton has been handed away.
    /// </summary>
    /// <param name="self">This thread's carrier.</param>
    /// <param name="standIn">This owned carrier runs the hub as a stand-in (Hub.Blocking.cs): when it hands the baton
    /// away it returns instead of parking here, so that a carrier lent again and again does not nest a frame each time.</param>
    /// <returns>True when the greenlet this thread keeps was resumed here (this thread holds the baton); false when the
    /// baton was handed away.</returns>
    private bool Schedule(Carrier self, bool standIn = false)
    {
        AssertBatonHeld();
        _inScheduler = true;
        while (true)
        {
            if (!TryTakeNext(self, out var item, out bool fromWaiters, out var leave))
            {
                switch (leave)
                {
                    case Leave.ToIdler: return LeaveToIdler(self, standIn); // it gets the baton back and idles
                    case Leave.Retired: return false; // this free carrier holds no baton: it goes back to the pool
                    default: continue;
                }
            }
            switch (item.Kind)
            {
                case RunKind.Callback:
                    RunCallback((Action<object?>)item.Callback!, item.State);
                    break;

                case RunKind.Resume:
                {
                    var g = item.Greenlet!;
                    if (!IsResumable(g)) break;
                    var target = g.Carrier!;
                    g.State = GreenletState.Running;
                    _current = g;
                    NoteSwitch();
                    if (target == self)
                    {
                        _inScheduler = false;
                        return true;
                    }
                    if (self.Owner != null)
                    {
                        if (standIn)
                        {
                            HandBaton(target, CarrierToNudge(self, target));
                            return false;
                        }
                        HandBatonAndPark(self, target);
                        return true;
                    }
                    if (self.IsPooled) PooledCarrierLeft();
                    HandBaton(target, CarrierToNudge(self, target));
                    return false; // a free carrier goes back to the pool; the baton is gone
                }

                case RunKind.Start:
                case RunKind.Continuation:
                    if (item.Kind == RunKind.Start && item.Greenlet!.State != GreenletState.Scheduled)
                        break; // killed before it ran
                    if (self.Owner == null)
                    {
                        RunInline(self, item);
                        if (self.MustRetire && HandBatonToRetire(self)) return false;
                        break;
                    }
                    // This thread keeps a suspended stack: new code must start on a free thread.
                    if (!fromWaiters && (_carriersInUse >= MaxCarriers || _carrierWaiters.Count > 0))
                    {
                        // Every carrier keeps a suspended greenlet (or others already wait): wait for one in FIFO
                        // order (see _carrierWaiters) instead of exceeding the cap.
                        _carrierWaiters.PushBack(item);
                        break;
                    }
                    _carrierWaiters.PushFront(item); // the free carrier takes exactly this item first
                    if (TryRentCarrier() is not { } free)
                        break; // the kernel refused a thread: the item waits at the front for a carrier to come back
                    free.Job = this;
                    if (standIn)
                    {
                        HandBaton(free);
                        return false;
                    }
                    HandBatonAndPark(self, free);
                    return true;

                default:
                    throw new InvalidOperationException($"Internal error: unexpected {item.Kind} item in the ready queue of {this}.");
            }
        }
    }

    /// <summary>Entry point of a pooled carrier given this hub as its job: it holds the baton and keeps no stack.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    internal void RunAsFreeCarrier(Carrier self)
    {
        t_current = this;
        TakeBaton();
        self.PinTo(_cpu); // pins for a pinned hub; undoes the pin a previous hub left otherwise
        Schedule(self);
        t_current = null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private void ParkUntilOwnerResumes(Carrier self, Carrier handedTo, bool spin)
    {
        while (true)
        {
            ParkCarrier(self, handedTo, spin);
            // An owned carrier is woken because its owner was resumed (Schedule, case Resume), or to stand in for a
            // released call's thread and run the hub while its owner stays parked (Hub.Blocking.cs).
            TakeBaton();
            if (!self.StandIn) break;
            self.StandIn = false;
            _standInEpoch++; // a stand-in again once it hands the baton on, its owner still parked (Hub.Blocking.cs)
            if (Schedule(self, standIn: true)) return; // the owner was resumed on the way
            spin = false;
        }
        _inScheduler = false;
        Debug.Assert(_current == self.Owner, $"Invariant broken: carrier #{self.Id} woke while {_current} holds the baton, not its owner {self.Owner}.");
    }

    /// <summary>An owner hands the baton to <paramref name="target"/> and parks until its greenlet is resumed: it spins
    /// for the baton when it may (Hub.Spinning.cs), else it nudges the carrier likely to be handed the baton next.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private void HandBatonAndPark(Carrier self, Carrier target)
    {
        bool spin = MaySpin(self);
        HandBaton(target, spin ? null : CarrierToNudge(self, target));
        ParkUntilOwnerResumes(self, target, spin);
    }

    /// <param name="target">The carrier that gets the baton.</param>
    /// <param name="nudge">A carrier to wake ahead of its turn (Hub.Spinning.cs), or null.</param>
    private void HandBaton(Carrier target, Carrier? nudge = null)
    {
        ReleaseBaton();
        target.Parker.Unpark();
        if (nudge != null) Nudge(nudge, target);
    }

    /// <summary>
    /// This free pooled carrier ran code that may have left it owning a mutex (<see cref="Carrier.MustRetire"/>): it
    /// hands the baton to a fresh free carrier, which takes its place in <see cref="_carriersInUse"/>, and its thread then
    /// ends (Carrier.PoolLoop), which abandons the mutex the moment the body is over, as a thread's exit does. Kept, with
    /// the ownership, only when the kernel refuses a replacement thread.
    /// </summary>
    private bool HandBatonToRetire(Carrier self)
    {
        Debug.Assert(self.IsPooled && self.Owner == null, $"Invariant broken: only a free pooled carrier may retire, not carrier #{self.Id} (owner {self.Owner}).");
        Carrier next;
        try
        {
            next = _pool.Rent();
        }
        catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
        {
            self.RetireAfterBody = false;
            self.OwnedUntilExit = 0;
            return false;
        }
        next.Job = this;
        HandBaton(next);
        return true;
    }

    /// <summary>
    /// A pooled carrier for this hub, counted in <see cref="_carriersInUse"/>; null when the kernel refused a new thread
    /// (a cgroup's pids.max or threads-max reached by the whole machine, which the cap computed at start could not
    /// foresee). The hub then uses no more carriers than it has until one comes back (<see cref="_carriersRefusedAt"/>):
    /// greenlets to start wait for one in FIFO order as at the cap, and a call that would release the baton runs with
    /// it held. Thrown from the scheduler, the failure reached whichever greenlet was parking, half-parked.
    /// </summary>
    private Carrier? TryRentCarrier()
    {
        Carrier carrier;
        try
        {
            carrier = _pool.Rent();
        }
        catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
        {
            if (!_carrierRefusalLogged)
            {
                _carrierRefusalLogged = true;
                // Written by a pool thread, not queued for the hub's log writer (Diagnostics/HubContextLogger.cs): that
                // writer is a greenlet, which may need the very carrier refused here and so wait until one comes back,
                // never if none does, while this warning is what explains the wait.
                ThreadPool.UnsafeQueueUserWorkItem(static s => Log.CarrierRefused(s.Logger, s.Reason, s.Hub, s.Carriers),
                    (Logger: _logger, Reason: e.Message, Hub: ToString(), Carriers: _carriersInUse), preferLocal: false);
            }
            _carriersRefusedAt = _carriersInUse;
            return null;
        }
        _carriersInUse++;
        if (_pool.TakeBurstNote() is { } burst) // queued by the hub's logger for its writer greenlet, as in any step
            Log.CarrierBurst(_logger, ToString(), burst.Threads, (long)burst.Within.TotalMilliseconds, burst.OnDemand);
        return carrier;
    }

    /// <summary>The number of carriers in use when the kernel last refused a thread, until a carrier comes back or the
    /// hub wakes from idling (then one more start is tried); -1: none refused. Lowers <see cref="MaxCarriers"/> meanwhile.</summary>
    private int _carriersRefusedAt = -1;

    private bool _carrierRefusalLogged; // once per hub: the refusal recurs until a limit is raised

    /// <summary>
    /// Greenlets to start (and stackless continuations) that need a free carrier while every carrier the hub may
    /// use keeps a suspended greenlet. Rather than exceed the cap (the runtime aborts when threads exhaust the
    /// process's memory mappings), they wait here in FIFO order and are taken before the ready queue as soon as a
    /// carrier is at hand (<see cref="MayStartWaiter"/>): the baton holder is free, or one went back to the pool.
    /// </summary>
    private readonly Deque<RunItem> _carrierWaiters = new(4);

    /// <summary>The cap on pooled carriers: <see cref="HubOptions.MaxCarriers"/>, or the machine's limit when that is 0.</summary>
    internal int MaxCarriers => _carriersRefusedAt >= 0 ? Math.Min(_carriersRefusedAt, Options.CarrierCap) : Options.CarrierCap;

    /// <summary>What set <see cref="MaxCarriers"/>, for messages and run info.</summary>
    internal string CarrierLimitSource =>
        _carriersRefusedAt >= 0 && _carriersRefusedAt < Options.CarrierCap ? "the kernel refused more threads" : Options.CarrierCapSource;

    /// <summary>Greenlets waiting for a carrier (see <see cref="_carrierWaiters"/>).</summary>
    internal int CarrierWaiters => _carrierWaiters.Count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private void RunInline(Carrier self, in RunItem item)
    {
        AmbientContext.AssertDefault(self);
        var g = item.Greenlet!;
        _inScheduler = false;
        if (item.Kind == RunKind.Start)
        {
            if (g.IsStackless) StartStackless(g);
            else RunStackful(self, g);
        }
        else
        {
            RunContinuation(g, (SendOrPostCallback)item.Callback!, item.State);
        }
        _current = HubGreenlet;
        _inScheduler = true;
    }

    private void RunStackful(Carrier self, Greenlet g)
    {
        self.Owner = g;
        g.Carrier = self;
        g.State = GreenletState.Running;
        _current = g;
        NoteSwitch();
        object? value = null;
        Exception? error = null;
        AmbientContext.Enter(g.Context); // the body runs under its creator's context (AmbientContext.cs, step 2)
        try
        {
            value = g.InvokeStackful();
        }
        catch (Exception e)
        {
            error = e;
        }
        AmbientContext.Reset(); // nothing of this greenlet's context is left for the carrier's next item
        self.ResetThreadAfterBody();
        AssertBatonHeld();
        self.Owner = null;
        g.Carrier = null;
        Finish(g, value, error);
    }

    private void StartStackless(Greenlet g)
    {
        g.State = GreenletState.Running;
        _current = g;
        NoteSwitch();
        var saved = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(g.SyncContext);
        AmbientContext.Enter(g.Context); // AmbientContext.cs, step 2; its awaits capture it from here on
        Task task;
        try
        {
            task = g.InvokeStackless();
        }
        catch (Exception e)
        {
            AmbientContext.Reset();
            SynchronizationContext.SetSynchronizationContext(saved);
            Finish(g, null, e);
            return;
        }
        AmbientContext.Reset();
        SynchronizationContext.SetSynchronizationContext(saved);
        if (task.IsCompleted)
        {
            FinishStackless(g, task);
            return;
        }
        g.State = GreenletState.Awaiting;
        _awaitingStackless++;
        // ExecuteSynchronously, not an awaiter callback: the body's task completes inside a continuation that runs
        // under the greenlet's synchronization context, where the runtime refuses to inline an awaiter's Action
        // and sends it through the thread pool (a thread hop and a cross-thread inbox post per greenlet).
        task.ContinueWith(s_onBodyCompleted, g, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private static readonly Action<object?> s_finishStackless = static state =>
    {
        var g = (Greenlet)state!;
        var hub = g.Hub;
        if (g.State == GreenletState.Dead)
            return; // already finished (killed before its body started)
        hub._awaitingStackless--;
        hub.FinishStackless(g, g.StacklessTask!);
    };

    private static readonly Action<Task, object?> s_onBodyCompleted = static (_, state) =>
    {
        var g = (Greenlet)state!;
        g.Hub.PostItem(RunItem.ForCallback(s_finishStackless, g)); // from any thread: the body may end off the hub
    };

    private void FinishStackless(Greenlet g, Task task)
    {
        if (task.IsCompletedSuccessfully) Finish(g, g.ResultOf(task), null);
        // Cancelled through the greenlet's own token, as docs/core.md tells async code to pass it: that is the kill
        // ending the greenlet, reported as a stackful greenlet's kill is, not as a failure.
        else if (task.IsCanceled && g.KillException is { } kill && new TaskCanceledException(task).CancellationToken == g.OwnToken)
            Finish(g, null, kill);
        else if (task.IsCanceled) Finish(g, null, new TaskCanceledException(task));
        else Finish(g, null, task.Exception!.InnerExceptions.Count == 1 ? task.Exception.InnerException! : task.Exception);
    }

    private void RunContinuation(Greenlet g, SendOrPostCallback callback, object? state)
    {
        var saved = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(g.SyncContext);
        // Only an awaiting greenlet runs now. One suspended in Switch (parked, or ready to be switched back to) stays so:
        // its park's wake must still find it there. One already running (a continuation inline in its own code) or dead
        // keeps its state too.
        bool awaited = g.State == GreenletState.Awaiting;
        if (awaited) g.State = GreenletState.Running;
        _current = g;
        NoteSwitch();
        // An await's continuation restores the context it captured itself; anything else posted to the greenlet's
        // synchronization context runs under the greenlet's creation context (AmbientContext.cs, step 4).
        AmbientContext.Enter(g.Context);
        try
        {
            callback(state);
        }
        catch (Exception e)
        {
            // Continuations of async methods capture their exceptions in their task; only async void lands here.
            Log.ContinuationFailed(_logger, e, g.ToString());
        }
        finally
        {
            AmbientContext.Reset();
            SynchronizationContext.SetSynchronizationContext(saved);
        }
        if (awaited && g.State == GreenletState.Running) g.State = GreenletState.Awaiting;
    }

    /// <summary>The user code the running hub callback stands for (a posted Action, a raw link), for event 6.</summary>
    internal System.Reflection.MethodInfo? CallbackSite;

    private HashSet<System.Reflection.MethodInfo>? _warnedCallbackSites;

    /// <summary>
    /// Called by the patch sets when a patched call on this hub's thread cannot park: inside a hub callback it runs the
    /// blocking original, which stalls every greenlet, so the first such call per callback is logged (event 6). Calls the
    /// scheduler itself makes (BCL internals spinning) are not callbacks and are not logged.
    /// </summary>
    internal void NoteNotCooperative()
    {
        // A thread of the hub without the baton (Hub.CanBlockHere) sees the holder's callback, not one of its own.
        if (!HoldsBaton || _callbackDepth == 0 || CallbackSite is not { } site) return;
        if (!(_warnedCallbackSites ??= new()).Add(site)) return;
        // The call site: the first frame outside this assembly and the extension that asked (the patch assembly, through
        // Parking.ParkingHub); the patched call: the frame above it.
        var frames = new StackTrace(1, false).GetFrames();
        var runtime = typeof(Hub).Assembly;
        var patch = Array.Find(frames, f => f.GetMethod()?.DeclaringType?.Assembly != runtime)?.GetMethod()?.DeclaringType?.Assembly;
        int k = Array.FindIndex(frames, f => f.GetMethod()?.DeclaringType?.Assembly is { } a && a != runtime && a != patch);
        static string Name(StackFrame f) => f.GetMethod() is { } m ? $"{m.DeclaringType?.Name}.{m.Name}" : "?";
        var call = k > 0 ? $"{Name(frames[k - 1])} from {Name(frames[k])}" : "unknown";
        Log.NotCooperativeInCallback(_logger, call, $"{site.DeclaringType?.Name}.{site.Name}", ToString());
    }

    private void RunCallback(Action<object?> callback, object? state)
    {
        var saved = _current;
        var savedSite = CallbackSite;
        CallbackSite = state is Delegate d ? d.Method : callback.Method;
        _current = HubGreenlet;
        _callbackDepth++;
        NoteBatonEpoch();
        // This thread may keep a parked greenlet's context: callbacks run under the default one and cannot change
        // the greenlet's (AmbientContext.cs, step 3).
        var savedContext = AmbientContext.EnterForCallback();
        // The scheduler never runs under a greenlet's synchronization context (Hub.EndPark, AmbientContext.Reset), so a
        // callback starts with none; one it installs is dropped after it.
        try
        {
            callback(state);
        }
        catch (Exception e)
        {
            Log.CallbackFailed(_logger, e, callback.Method.Name);
        }
        finally
        {
            if (SynchronizationContext.Current != null) SynchronizationContext.SetSynchronizationContext(null);
            AmbientContext.LeaveCallback(savedContext);
            CallbackSite = savedSite;
            _callbackDepth--;
            _current = saved;
            NoteBatonEpoch();
        }
    }

    /// <summary>Steps 1, 2 and 4 of the protocol: returns the next item (a carrier waiter first when one may start now),
    /// or false after an idle wait, or false with <c>leave</c> set when this thread must leave the scheduler instead
    /// (<see cref="Leave"/>).</summary>
    /// <summary>Why Schedule must stop after <see cref="TryTakeNext"/> returned false (Hub.IdleLending.cs).</summary>
    private enum Leave
    {
        /// <summary>It goes on: an idle wait ended.</summary>
        No,
        /// <summary>Nothing to run while an idle carrier sleeps lent: that carrier gets the baton back.</summary>
        ToIdler,
        /// <summary>This free carrier slept lent and was retired: it holds no baton and must not touch the hub.</summary>
        Retired,
    }

    private bool TryTakeNext(Carrier self, out RunItem item, out bool fromWaiters, out Leave leave)
    {
        leave = Leave.No;
        _inLoopPhase = true;
        try
        {
            DrainInbox();
            if (_timers.Count > 0) FireDueTimers();
            if (_reactor != null) PollIoIfDue();
        }
        finally
        {
            _inLoopPhase = false;
        }
        // A greenlet waiting to release the baton for Green.RunBlocking goes first: the free carrier it takes runs the
        // scheduler next and starts a carrier waiter itself (Hub.Blocking.cs).
        bool releaseWaiterWoken = _releaseWaiters.Count > 0 && WakeReleaseWaiter(self);
        fromWaiters = !releaseWaiterWoken && _carrierWaiters.Count > 0 && MayStartWaiter(self);
        if (fromWaiters)
        {
            item = _carrierWaiters.PopFront();
            return true;
        }
        if (TryTakeReady(self, out item))
            return true;
        if (IdlerLent)
        {
            // Another carrier sleeps in this hub's idle wait, lent: it idles, not this thread (Hub.IdleLending.cs).
            leave = Leave.ToIdler;
            return false;
        }
        bool stillHeld = true;
        _inLoopPhase = true;
        try
        {
            stillHeld = IdleWait(self);
        }
        finally
        {
            if (stillHeld) _inLoopPhase = false;
        }
        if (!stillHeld) leave = Leave.Retired;
        return false;
    }

    /// <summary>A carrier waiter may start now: this thread is free, or the hub is below its carrier cap.</summary>
    private bool MayStartWaiter(Carrier self) => self.Owner == null || _carriersInUse < MaxCarriers;

    /// <returns>False when this free carrier was retired while it slept lent (Hub.IdleLending.cs): it holds no baton and
    /// must leave the hub untouched.</returns>
    private bool IdleWait(Carrier self)
    {
        long timeoutNs = -1;
        if (_timers.TryPeekDeadline(out var deadline))
        {
            timeoutNs = Math.Max(0, TicksToNanoseconds(deadline - _time.GetTimestamp()));
            if (timeoutNs == 0) return true;
        }
        else if (_pendingExternal == 0 && _awaitingStackless == 0 && _inbox.IsEmpty)
        {
            if (RaiseLoopExit()) return true;
        }
        NoteIdle(true);
        if (MayOfferIdleBaton(self))
        {
            if (!SleepOfferingBaton(timeoutNs)) return false;
        }
        else if (_reactor != null) SleepInReactor(timeoutNs);
        else _inboxSignal.Park(timeoutNs);
        NoteIdle(false);
        _carriersRefusedAt = -1; // a carrier the kernel refused is asked for again once per wake, not in a spin
        return true;
    }

    /// <summary>Nothing can ever wake anyone: fail the main greenlet's blocking call instead of hanging.</summary>
    private bool RaiseLoopExit()
    {
        var main = MainGreenlet;
        if (main.State != GreenletState.Parked)
            return false;
        string message = _carrierWaiters.Count == 0
            ? $"This operation would block forever: {main} is waiting ({main.WaitReason}) and no greenlet is ready, no timer is pending and no operation is outstanding on {this}.{PrimitiveWaitHint()}"
            : $"This operation would block forever: {_carrierWaiters.Count} greenlet(s) of {this} wait for a carrier thread, but all {_carriersInUse} carriers (HubOptions.MaxCarriers = {Options.MaxCarriers}: a cap of {MaxCarriers:N0}, {CarrierLimitSource}) keep suspended greenlets that nothing can wake any more (they wait for something only a greenlet that has not started could provide). Raise HubOptions.MaxCarriers (up to the machine's limit; docs/core.md says how to raise that), or bound concurrency with a GreenPool or use stackless greenlets.";
        return TryWake(new WakeToken(main, main.ParkSequence), null, new LoopExitException(message));
    }

    /// <summary>For a LoopExit in which greenlets wait on primitives: the hub cannot see plain threads that hold one (a
    /// library's callback that will set an Event or put into a GreenQueue), so it says what to do about them.</summary>
    private string PrimitiveWaitHint()
    {
        foreach (var g in AliveGreenlets())
        {
            if (g.State == GreenletState.Parked && g.WaitReason is WaitReason.Event or WaitReason.Queue or WaitReason.Lock)
                return $" {g} waits on a primitive ({g.WaitReason}): such a wait counts as outstanding only while another hub may run. If a thread that is not a greenlet (a library's callback, the thread pool) will signal it, hold a keep-alive while it may (using var alive = Hub.Current.KeepAlive();), or wait with a timeout: either keeps the hub from reporting this.";
        }
        return "";
    }

    private long TicksToNanoseconds(long timestampTicks) => (long)(timestampTicks * (1_000_000_000.0 / _time.TimestampFrequency));

    /// <summary>A pooled carrier this hub held goes back to the pool. Baton holder only.</summary>
    private void PooledCarrierLeft()
    {
        _carriersInUse--;
        _carriersRefusedAt = -1; // one came back: the kernel may give a thread again
    }

    /// <summary>
    /// Runs the scheduler on the thread of a greenlet that is not running (parked, or back from a released call) until
    /// that greenlet is resumed: without the greenlet's synchronization context, so that the hub callbacks it runs here
    /// never post into it (AmbientContext.cs, step 3), and with it again afterwards. Returns what Schedule returns.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private bool ScheduleOnGreenletsThread(Carrier self)
    {
        var sync = SynchronizationContext.Current;
        if (sync != null) SynchronizationContext.SetSynchronizationContext(null);
        bool resumed = Schedule(self);
        if (sync != null) SynchronizationContext.SetSynchronizationContext(sync);
        return resumed;
    }

    // Invariant 1 checks. The holder is recorded in every build (one store); it is compared only in DEBUG, where a take is
    // one compare-and-swap from "no holder", so two threads that each believe they were handed the baton at the same
    // moment fail at the take itself (a read then a store let both through, and the break surfaced later, at whichever
    // check one of them met next, far from where it happened), and the messages name the method of the last take and of
    // the last release. A failure goes through SyncLock, as every DEBUG check's: a primitive's lock the
    // thread holds is freed before it leaves.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void TakeBaton([CallerMemberName] string site = "")
    {
        TakeBatonChecked(site);
#if !DEBUG
        _batonHolder = Environment.CurrentManagedThreadId;
#endif
        _batonHolderOsThread = Diagnostics.OsThread.CurrentId; // for the blocking monitor's stack capture
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReleaseBaton([CallerMemberName] string site = "")
    {
        AssertBatonHeld();
        NoteRelease(site);
        _batonHolder = 0;
        // In transit: the carrier it was handed to may wait for a CPU a while. Meanwhile no thread holds it, so the
        // blocking monitor must not take the thread that just parked for a holder asleep in a blocking call.
        _batonHolderOsThread = 0;
    }

    /// <summary>Where the baton was last taken and released, and by which thread (DEBUG: for Invariant 1's messages).</summary>
    private string _batonTakenIn = "", _batonReleasedIn = "";

    private int _batonReleasedBy;

    [Conditional("DEBUG")]
    private void TakeBatonChecked(string site)
    {
        int me = Environment.CurrentManagedThreadId;
        int holder = Interlocked.CompareExchange(ref _batonHolder, me, 0);
        if (holder != 0 && holder != me)
            throw Sync.SyncLock.InvariantBroken($"Invariant 1 broken: thread {me} takes the baton of {this} in {site} while thread {holder} still holds it ({BatonHistory()}).");
        _batonTakenIn = site;
    }

    [Conditional("DEBUG")]
    private void NoteRelease(string site)
    {
        _batonReleasedIn = site;
        _batonReleasedBy = Environment.CurrentManagedThreadId;
    }

    [Conditional("DEBUG")]
    internal void AssertBatonHeld()
    {
        if (!HoldsBaton)
            throw Sync.SyncLock.InvariantBroken($"Invariant 1 broken: thread {Environment.CurrentManagedThreadId} runs code of {this} without holding its baton (holder: {Volatile.Read(ref _batonHolder)}; {BatonHistory()}).");
    }

    /// <summary>
    /// A resume taken from the ready queues names a greenlet that is ready, on the carrier that keeps its stack: every
    /// park has exactly one wake, and a park undone after its wake takes its resume back (CancelPark). A stale one resumed
    /// the greenlet's next park without a wake, or, the greenlet dead, named no carrier: HandBaton released the baton
    /// before it failed on the missing carrier, and the exception left the scheduler of a thread that no longer held it
    /// (Invariant 1). Checked here, before anything moves, so that such an item is named where it is taken.
    /// </summary>
    /// <remarks>A release build does not trust it with the process: such an item is dropped and logged (event 18), since
    /// acting on it fails on a thread that no longer holds the baton, and on a pooled carrier's thread that exception
    /// ended the process (a cold HTTP server under wrk, once in 5 processes, when a thread without the baton could still
    /// release it: see CanBlockHere). Dropping it is right whatever made it: the greenlet it names is not parked in its
    /// EndPark, so nothing waits for it.</remarks>
    private bool IsResumable(Greenlet g)
    {
        if (g.State == GreenletState.Ready && g.Carrier != null) return true;
        var carrier = g.Carrier is { } c ? "carrier #" + c.Id : "no carrier";
#if DEBUG
        if (!DropStaleResumesForTesting)
            throw Sync.SyncLock.InvariantBroken($"Invariant broken: the ready queue of {this} resumes {g}, which is {g.State} ({carrier}), not ready: a resume outlived its park.");
#endif
        Log.StaleResumeDropped(_logger, ToString(), g.ToString(), g.State.ToString(), carrier);
        return false;
    }

    /// <summary>Tests only: Debug builds drop a stale resume as release builds do, instead of failing.</summary>
    internal static bool DropStaleResumesForTesting;

    /// <summary>Tests only: queues <paramref name="item"/> as the scheduler's own code would.</summary>
    internal void EnqueueForTesting(in RunItem item) => Enqueue(item);

    private string BatonHistory() =>
        $"last taken in {Volatile.Read(ref _batonTakenIn)}, last released in {Volatile.Read(ref _batonReleasedIn)} by thread {Volatile.Read(ref _batonReleasedBy)}";
}
