// The order in which the baton holder takes ready items: arrival order, with two bounded exceptions that save
// hand-offs.
//
// Two queues: _ready holds what greenlet code queued (starts, yields, wakes by other greenlets, continuations,
// posted callbacks) and _wakes what the loop queued while it ran (Hub.Scheduler.cs, steps 1 and 2 and the reactor:
// greenlets and continuations woken by a fired timer, by I/O, or by another thread through the inbox). Arrival
// order across the two is kept with a stamp instead of a clock: a wake records how many items had been pushed into
// _ready before it, and it is older than _ready's front once that many have been taken.
//
// What an item costs depends on the thread that takes it (Hub.Scheduler.cs, step 3): a thread that keeps a
// suspended greenlet (an "owner") must hand the baton to another thread for anything but a callback or its own
// greenlet; a free thread runs starts, continuations and callbacks itself. So:
//   (a) an owner whose next item in arrival order is a start takes the oldest wake instead, once starts have run
//       for a slice while wakes waited: the start would cost a hand-off too, and the woken greenlet often ends and
//       frees its thread, which then runs the start inline. Within the slice starts go first, as gevent's
//       callbacks do: code that spawns greenlets and sleeps a millisecond finds them started;
//   (b) a free thread whose next item in arrival order is a woken greenlet takes _ready's front instead when it can
//       run that item itself: the resume would send it back to the pool and hand the baton to another thread. (A
//       callback or continuation the loop queued runs here anyway: it keeps its place, so a kill posted from another
//       thread still reaches a greenlet whose start was posted before it, before that start runs.)
// Together they pair every wake with a start once a burst of starts has lasted a slice: 10,000 greenlets that each
// sleep a random 0–49 ms cost about one hand-off each instead of two, and far fewer threads are created for the
// start phase (docs/core.md, "Which ready greenlet runs next"). Starts before the loop's wakes is gevent's order
// (its callbacks run before its timers and I/O); wakes going first once the start phase has outrun its slice is
// gevent's too (its loop runs due timers and I/O once its callback phase has taken longer than its switch interval).
//
// Bound: once an exception has passed over the other queue's oldest item for longer than a slice (5 ms, gevent's
// default switch interval), arrival order holds alone until it has caught up: until it takes an item of the queue
// the exception preferred. So no item waits longer than a slice plus what arrived before it, and starts, yields and
// callbacks keep their order among themselves, as do the loop's wakes.
//
// Rejected: starts strictly in arrival order (10,000 sleepers: 3.9 s and a thread per greenlet, the greenlets whose
// timers fired waiting behind starts that each need a new thread); moving every queued wake to the front once a
// start phase outran its slice (the ready queue rewritten every 5 ms, and still two hand-offs per greenlet).

using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private readonly Deque<RunItem> _ready = new(64);
    private readonly Deque<RunItem> _wakes = new(64);

    /// <summary>Set while the loop runs (inbox, timers, reactor): what it queues then goes to <see cref="_wakes"/>.</summary>
    private bool _inLoopPhase;

    /// <summary>Items pushed into and taken from <see cref="_ready"/> (wrapping counters: only their difference to a
    /// wake's stamp is read). An item queued first (Switch) is taken out of turn, which makes the comparison approximate
    /// for the wakes queued before it: they may go after one more item of <see cref="_ready"/>, or before it.</summary>
    private int _readyPushed, _readyTaken;

    /// <summary>Items at the front of <see cref="_ready"/> queued to run before everything (Switch): ahead of the wakes too.</summary>
    private int _readyFirst;

    /// <summary>Since when (Stopwatch ticks) an exception of the order has passed over the front of one queue, or 0;
    /// <see cref="_passedOverWakes"/> tells which queue.</summary>
    private long _passingOverSince;

    private bool _passedOverWakes;

    /// <summary>Set when a pass-over outran its slice: arrival order alone, until everything older than the other
    /// queue's front has run.</summary>
    private bool _arrivalOrderOnly;

    /// <summary>Since when (Stopwatch ticks) starts have been taken while wakes by the loop waited, or 0: the start
    /// phase that exception (a) waits a slice for.</summary>
    private long _startsAheadOfWakesSince;

    /// <summary>How long an exception of the order may pass over the other queue: gevent's default switch interval, 5 ms.</summary>
    private static readonly long SliceTicks = Stopwatch.Frequency / 200;

    internal int ReadyCount => _ready.Count + _wakes.Count;

    /// <summary>Queues an item to run; items the loop queues, except starts, are wakes (see the header). An item queued
    /// <c>first</c> (Switch) runs before everything queued, wakes included.</summary>
    private void Enqueue(in RunItem item, bool first = false)
    {
        if (_inLoopPhase && item.Kind != RunKind.Start && !first)
        {
            _wakes.PushBack(item.WithStamp(_readyPushed));
            return;
        }
        _readyPushed++;
        if (first)
        {
            _ready.PushFront(item);
            _readyFirst++;
        }
        else
        {
            _ready.PushBack(item);
        }
    }

    /// <summary>Takes the next ready item for <paramref name="self"/> by the order of the header.</summary>
    private bool TryTakeReady(Carrier self, out RunItem item)
    {
        if (_wakes.Count == 0 || _ready.Count == 0 || _readyFirst > 0)
        {
            if (_readyFirst == 0)
            {
                _passingOverSince = 0;
                _arrivalOrderOnly = false;
                _startsAheadOfWakesSince = 0;
            }
            if (_ready.Count == 0) return _wakes.TryPopFront(out item);
            item = TakeFromReady();
            return true;
        }
        bool wakeIsOlder = _readyTaken - _wakes.PeekFront().Sequence >= 0;
        bool takeWake = wakeIsOlder;
        if (_arrivalOrderOnly)
        {
            // Caught up once arrival order takes from the queue that was not passed over.
            if (wakeIsOlder != _passedOverWakes) _arrivalOrderOnly = false;
        }
        else if (wakeIsOlder
                     ? self.Owner == null && _wakes.PeekFront().Kind == RunKind.Resume && _ready.PeekFront().Kind != RunKind.Resume // (b)
                     : self.Owner != null && _ready.PeekFront().Kind == RunKind.Start && StartPhaseOutranItsSlice()) // (a)
        {
            long now = Stopwatch.GetTimestamp();
            if (_passingOverSince == 0 || _passedOverWakes != wakeIsOlder)
            {
                _passingOverSince = now;
                _passedOverWakes = wakeIsOlder;
            }
            if (now - _passingOverSince <= SliceTicks)
            {
                takeWake = !wakeIsOlder;
            }
            else
            {
                _arrivalOrderOnly = true;
                _passingOverSince = 0;
            }
        }
        if (takeWake == _passedOverWakes) _passingOverSince = 0; // the front passed over runs now
        if (takeWake)
        {
            item = _wakes.PopFront();
            return true;
        }
        item = TakeFromReady();
        if (item.Kind == RunKind.Start && _startsAheadOfWakesSince == 0) _startsAheadOfWakesSince = Stopwatch.GetTimestamp();
        return true;
    }

    /// <summary>Whether a queued item is the resume of the greenlet (WithdrawResume's test for both queues).</summary>
    private static readonly Func<RunItem, Greenlet, bool> s_isResumeOf = static (item, g) => item.Kind == RunKind.Resume && item.Greenlet == g;

    /// <summary>
    /// Takes the queued resume of <paramref name="g"/>, a greenlet that is <see cref="GreenletState.Ready"/>, out of the
    /// ready queues: its park is being undone (<see cref="CancelPark"/>), and the queues hold a resume only for a ready
    /// greenlet (Hub.Scheduler.cs checks it as it takes one). Left there, the resume named a greenlet that ran on: it
    /// resumed the greenlet's next park without a wake, or, once the greenlet had ended, named no carrier, and the
    /// scheduler failed after giving the baton away. Rare (a wake inside the registration that then failed), so a scan.
    /// </summary>
    private void WithdrawResume(Greenlet g)
    {
        int i = _ready.FindIndex(s_isResumeOf, g);
        if (i >= 0)
        {
            _ready.RemoveAt(i);
            _readyTaken++; // as if taken: the wakes stamped after it stay ordered against what is left
            if (i < _readyFirst) _readyFirst--;
            return;
        }
        i = _wakes.FindIndex(s_isResumeOf, g);
        if (i >= 0) _wakes.RemoveAt(i);
#if DEBUG
        else throw Sync.SyncLock.InvariantBroken($"Invariant broken: {g} is ready but no resume of it is queued on {this}.");
#endif
    }

    private bool StartPhaseOutranItsSlice() =>
        _startsAheadOfWakesSince != 0 && Stopwatch.GetTimestamp() - _startsAheadOfWakesSince > SliceTicks;

    private RunItem TakeFromReady()
    {
        _readyTaken++;
        if (_readyFirst > 0) _readyFirst--;
        return _ready.PopFront();
    }
}
