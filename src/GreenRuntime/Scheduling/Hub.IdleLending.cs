// Lending an idle hub's baton to a released call that returns.
//
// A released call (Hub.Blocking.cs: a Monitor.Wait, a contended lock, WaitOne, Green.RunBlocking) ends on its own
// thread C while another carrier R runs the hub. When R has nothing to do it sleeps in IdleWait. Without lending, C
// posted "returned" to the inbox, which woke R, which drained it and handed the baton to C: two futex wakes of
// sleeping threads, one after the other, between the end of the call and the greenlet going on — the whole cost of
// a StackExchange.Redis synchronous command over a thread's, whose reader pulses the waiting thread directly.
//
// With lending, C takes the baton itself and runs the scheduler exactly as R would have (drains the inbox, in which
// its own return is the newest item, fires due timers, takes the next item), while R goes on sleeping. The baton goes
// back to R the next time the hub would idle, or when C's greenlet releases it again: one wake, which a release costs
// anyway (it used to rent a fresh carrier). The state word _idleBaton:
//
//   None        the baton holder holds it the ordinary way (R awake, or no sleeping idler).
//   Offered     R, a free pooled carrier, has released the baton and sleeps (on the inbox signal, or in epoll_wait on a
//               hub with a reactor) until a timer is due or a post or I/O wakes it. R or one returning released call
//               takes it, by CAS.
//   Lent        a returned released call took it (Offered -> Lent): the baton holder is another thread and R still
//               sleeps where it did, waiting to be handed it back. Posts skip the inbox signal's wake: the holder drains
//               the inbox at every step, and R drains it once it has the baton back.
//   HandedBack  the holder gave it back (Lent -> HandedBack, then the inbox signal's permit): R takes it as it wakes.
//   Retire      the hub closes, or makes its reactor while R sleeps lent on the futex (whose posts and hand-back then
//               write an eventfd R does not watch): R leaves the hub without touching it and goes back to the pool; the
//               holder waits until it has left its sleep (Retire -> None): the signal has room for one sleeper, and the
//               reactor is disposed next.
//
// On a hub with a reactor R sleeps in epoll_wait, as any idle holder there does, so I/O wakes it too. It does not hold
// the baton meanwhile, and the reactor's rules (Io/Reactor.cs: registrations and Dispatch on the baton holder only) are
// kept this way:
//   * R computes its timeout, the sweep's deadline included, before it offers (Reactor.SleepLimit), and its sleep
//     (Reactor.SleepWithoutBaton) touches only the epoll and eventfd descriptors and a buffer of its own: the holder's
//     non-waiting poll every 64 steps fills the reactor's buffer at the same time. The eventfd is drained there.
//   * The events R receives are edges the kernel reports to nobody else. Offered or handed back, R takes the baton and
//     dispatches them (Reactor.DispatchIdleEvents, then the sweep if due), as the poll it replaces would have. Lent, it
//     enqueues them in the inbox as one item (ForwardedEvents, no wake: the holder drains the inbox at every step, and
//     if it hands the baton back first R drains it itself) that DrainInbox dispatches in the loop phase, where a poll's
//     dispatch runs: not as a callback, whose synchronization context would send a stackless waiter's continuation to the
//     thread pool. Then R sleeps in epoll_wait again, with no timeout: timers and the sweep are the holder's business
//     while it holds the baton, and R's next sleep after the hand-back computes both afresh. Sleeping on a futex instead
//     would need a second wake path for the hand-back; in epoll R hears edges early, at the price of a wake per edge
//     while lent, which it forwards.
//   * The hand-back must wake R in epoll_wait. The inbox signal's unpark writes the eventfd only when it finds R marked
//     asleep, and the mark may be stale: a post that read Offered just before the CAS to Lent unparks, writes the
//     eventfd, and the holder's own poll may read that write before R sees it, leaving a permit while R sleeps on. So
//     HandBackToIdler writes the eventfd itself when the word does not say asleep (a fresh mark, which only R makes, means
//     the unpark's write will reach it), before it moves the state on, since once handed back the hub may close and
//     dispose the reactor; RetireLentIdler always writes it.
//   * Closing retires R as above: R leaves epoll_wait through the eventfd, drops what it received (the reactor goes with
//     its registrations) and touches nothing after Retire -> None, after which the holder disposes the reactor.
//
// Invariants:
//   * Invariant 1 (one baton holder) holds: R releases the baton before it offers it and takes it again only through
//     the CAS Offered -> None or from HandedBack; the taker takes it only through the CAS Offered -> Lent.
//   * While a thread holds the baton the word is None or Lent, so a holder reads it without a race; only holders move
//     it on from Lent.
//   * Only a free pooled carrier lends (Owner null): nothing else hands that carrier the baton through its own parker
//     (a parked greenlet's carrier is resumed and lent as a stand-in that way), so the one way to reach it is the inbox
//     signal (or the eventfd) it sleeps on. While it is lent it counts in _carriersInUse, as while it idled.
//   * R touches no hub state from the moment it offers until it holds the baton again, but the inbox (a concurrent
//     queue) and the reactor's descriptors and idle buffer; a retired R touches none at all.
//   * The idle buffer has one user at a time: only a holder offers, and the next offer needs the baton back.
//   * Order: the taker runs the same scheduler step R would have, on the same queues; only which thread runs it
//     differs (a thread that keeps a suspended greenlet, where R was free: Hub.Order.cs's rules hold for both).

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private const int IdleNone = 0, IdleOffered = 1, IdleLent = 2, IdleHandedBack = 3, IdleRetire = 4;

    /// <summary>Where an idle hub's baton is (see the header of this file).</summary>
    private int _idleBaton;

    /// <summary>Released calls that took an idle hub's baton on their return (tests, run info).</summary>
    internal long IdleBatonTakeovers => Volatile.Read(ref _idleBatonTakeovers);

    private long _idleBatonTakeovers;

    /// <summary>Times an idle carrier, lent, received socket events and forwarded them to the holder (tests).</summary>
    internal long IdleEventsForwarded => Volatile.Read(ref _idleEventsForwarded);

    private long _idleEventsForwarded;

    /// <summary>Pooled carriers this hub uses now, a lent idler included (tests). Read from any thread: may be stale.</summary>
    internal int CarriersInUse => Volatile.Read(ref _carriersInUse);

    /// <summary>Whether a thread of this hub sleeps lent (baton holder only: the word is then None or Lent).</summary>
    private bool IdlerLent => Volatile.Read(ref _idleBaton) == IdleLent;

    /// <summary>Whether the idle wait of <paramref name="self"/> may offer the baton: a free pooled carrier of a hub that
    /// is not closing. Baton holder only.</summary>
    private bool MayOfferIdleBaton(Carrier self) => self is { Owner: null, IsPooled: true } && !_closed;

    /// <summary>
    /// IdleWait's sleep for a free pooled carrier: releases the baton, offers it, and sleeps (on the inbox signal, or in
    /// the reactor's epoll_wait) until a post, I/O or <paramref name="timeoutNs"/> (negative: none) ends the sleep with
    /// the baton still offered, or the baton is handed back after a released call's return took it. Returns false when
    /// the hub retired this carrier meanwhile: it holds no baton and must leave the hub without touching it.
    /// </summary>
    private bool SleepOfferingBaton(long timeoutNs)
    {
        var reactor = _reactor; // fixed while the baton is out: only the holder creates a reactor, and it retires a lent idler first
        if (reactor != null)
        {
            timeoutNs = reactor.SleepLimit(timeoutNs); // the sweep's deadline is the holder's state: read it now
            _stepsSinceIoPoll = 0;
        }
        ReleaseBaton();
        Interlocked.Exchange(ref _idleBaton, IdleOffered);
        // Nothing below touches the hub until the baton is this thread's again, but the inbox and the reactor's fds and
        // idle buffer (Reactor.SleepWithoutBaton).
        int events = 0; // socket events in the reactor's idle buffer, not yet dispatched nor forwarded
        while (true)
        {
            if (reactor == null) _inboxSignal.Park(timeoutNs);
            else events = reactor.SleepWithoutBaton(timeoutNs, _inboxSignal);
            int state = Interlocked.CompareExchange(ref _idleBaton, IdleNone, IdleOffered);
            if (state == IdleOffered) break; // a post, I/O or the timer: still this thread's
            if (state == IdleHandedBack)
            {
                Volatile.Write(ref _idleBaton, IdleNone);
                break;
            }
            if (state == IdleRetire)
            {
                // The hub closes: its reactor is about to be disposed with everything registered in it.
                Volatile.Write(ref _idleBaton, IdleNone); // after the sleep: the holder may use the signal and the reactor now
                return false;
            }
            // Lent: a post woke this thread before the holder's skip could apply, or the timer is due, which is the
            // holder's business now; or edges came, which only this thread has heard of: they go to the holder through
            // the inbox (no wake: it drains the inbox at every step; handed back, this thread drains it itself). Sleep
            // until the baton comes back.
            if (events > 0)
            {
                _inbox.Enqueue(RunItem.ForCallback(s_dispatchForwarded, new ForwardedEvents(reactor!, reactor!.ForwardIdleEvents(events))));
                events = 0;
                Interlocked.Increment(ref _idleEventsForwarded);
            }
            timeoutNs = -1;
        }
        TakeBaton();
        reactor?.DispatchIdleEvents(events);
        return true;
    }

    /// <summary>Socket events an idle carrier received while lent, for the holder (dispatched by DrainInbox, in the loop
    /// phase, as a poll's are).</summary>
    private sealed record ForwardedEvents(Io.Reactor Reactor, Io.Epoll.Event[] Events);

    private static readonly Action<object?> s_dispatchForwarded = static state =>
    {
        var forwarded = (ForwardedEvents)state!;
        forwarded.Reactor.DispatchForwarded(forwarded.Events);
    };

    /// <summary>
    /// The end of a released call (Hub.Blocking.cs, step 4), with <paramref name="returned"/> its return: queued in the
    /// inbox, and when the hub's baton is offered by an idle carrier, taken here (true: this thread holds the baton and
    /// must run the scheduler). Otherwise (false) the inbox signal is woken, as any post does.
    /// </summary>
    private bool PostReturnTakingIdleBaton(in RunItem returned)
    {
        _inbox.Enqueue(returned);
        if (Interlocked.CompareExchange(ref _idleBaton, IdleLent, IdleOffered) != IdleOffered)
        {
            _inboxSignal.Unpark();
            return false;
        }
        TakeBaton();
        NoteIdle(false);
        Interlocked.Increment(ref _idleBatonTakeovers);
        return true;
    }

    /// <summary>
    /// The baton holder, with the idler lent and nothing to run, or releasing the baton for a released call: hands the
    /// baton back to the idler, which drains the inbox, fires timers and idles as it would have. Baton holder only; the
    /// baton is gone when it returns.
    /// </summary>
    private void HandBackToIdler()
    {
        var reactor = _reactor;
        ReleaseBaton();
        // An idler in epoll_wait may have lost the eventfd write of a post that came while the baton was offered (the
        // holder's own non-waiting poll read it), so the signal's word may hold a permit that it has not seen while it
        // sleeps: the unpark below would then write nothing. This write ends that sleep; the idler sees the permit and
        // goes by the signal from then on. Not needed when the word says asleep: only the idler marks it so, afresh, and
        // the unpark then writes the eventfd, which nobody but the idler reads now (this thread polls no more). Before the
        // state moves on: once handed back the hub may close and dispose the reactor, and its eventfd's number be reused.
        if (reactor != null && !_inboxSignal.IsSleeping) reactor.Interrupt();
        Interlocked.Exchange(ref _idleBaton, IdleHandedBack);
        // The idler may already hold the baton and have closed the hub: this unpark's eventfd write holds the
        // descriptor open across it (Io/SharedEventFd.cs), as any post's does.
        _inboxSignal.Unpark();
    }

    /// <summary>
    /// Schedule found nothing to run while the idler is lent (<see cref="TryTakeNext"/>): gives the baton back to it and
    /// leaves as a hand-off does (Schedule, case Resume): a free carrier goes back to the pool, an owned one parks until
    /// its greenlet is resumed (a stand-in returns to its own park). Returns what Schedule returns.
    /// </summary>
    private bool LeaveToIdler(Carrier self, bool standIn)
    {
        if (self.Owner == null && self.IsPooled) PooledCarrierLeft();
        HandBackToIdler();
        if (self.Owner == null || standIn) return false;
        ParkUntilOwnerResumes(self, self, spin: false);
        return true;
    }

    /// <summary>
    /// Before the hub closes or starts sleeping in a reactor: a lent idler goes back to the pool, and this holder waits
    /// (briefly: one wake) until it has left the inbox signal and the reactor's epoll_wait, which are about to be slept
    /// on differently or not at all. Baton holder only.
    /// </summary>
    private void RetireLentIdler()
    {
        if (!IdlerLent) return;
        PooledCarrierLeft();
        Interlocked.Exchange(ref _idleBaton, IdleRetire);
        _inboxSignal.Unpark();
        _reactor?.Interrupt(); // as in HandBackToIdler; the reactor is disposed only after the idler has left
        // Thread.SpinWait only: the yields and sleeps of SpinWait are patched calls, and this is hub code.
        while (Volatile.Read(ref _idleBaton) != IdleNone) Thread.SpinWait(64);
        // The idler consumed the permit as it woke; a post that came since left another, which is the holder's now.
    }
}
