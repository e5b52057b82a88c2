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
//   Offered     R, a free pooled carrier of a hub with no reactor, has released the baton and sleeps on the inbox
//               signal until a timer is due or a post wakes it. R or one returning released call takes it, by CAS.
//   Lent        a returned released call took it (Offered -> Lent): the baton holder is another thread and R still
//               sleeps on the inbox signal, waiting to be handed it back. Posts skip the inbox signal's wake: the holder
//               drains the inbox at every step, and R drains it once it has the baton back.
//   HandedBack  the holder gave it back (Lent -> HandedBack, then the inbox signal's permit): R takes it as it wakes.
//   Retire      the hub closes, or makes a reactor (whose idle holder sleeps in epoll, woken through an eventfd, not the
//               futex R sleeps on): R leaves the hub without touching it and goes back to the pool; the holder waits
//               until it has left the inbox signal (Retire -> None), since the signal has room for one sleeper.
//
// Invariants:
//   * Invariant 1 (one baton holder) holds: R releases the baton before it offers it and takes it again only through
//     the CAS Offered -> None or from HandedBack; the taker takes it only through the CAS Offered -> Lent.
//   * While a thread holds the baton the word is None or Lent, so a holder reads it without a race; only holders move
//     it on from Lent.
//   * Only a free pooled carrier lends (Owner null): nothing else hands that carrier the baton through its own parker
//     (a parked greenlet's carrier is resumed and lent as a stand-in that way), so the one way to reach it is the inbox
//     signal it sleeps on. While it is lent it counts in _carriersInUse, as while it idled.
//   * R touches no hub state from the moment it offers until it holds the baton again; a retired R touches none at all.
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

    /// <summary>Pooled carriers this hub uses now, a lent idler included (tests). Read from any thread: may be stale.</summary>
    internal int CarriersInUse => Volatile.Read(ref _carriersInUse);

    /// <summary>Whether a thread of this hub sleeps lent (baton holder only: the word is then None or Lent).</summary>
    private bool IdlerLent => Volatile.Read(ref _idleBaton) == IdleLent;

    /// <summary>Whether the idle wait of <paramref name="self"/> may offer the baton: a free pooled carrier, a hub that
    /// sleeps on the futex (no reactor). Baton holder only.</summary>
    private bool MayOfferIdleBaton(Carrier self) => self is { Owner: null, IsPooled: true } && _reactor == null && !_closed;

    /// <summary>
    /// IdleWait's sleep for a free pooled carrier: releases the baton, offers it, and sleeps on the inbox signal until a
    /// post or <paramref name="timeoutNs"/> (negative: none) ends the sleep with the baton still offered, or the baton is
    /// handed back after a released call's return took it. Returns false when the hub retired this carrier meanwhile:
    /// it holds no baton and must leave the hub without touching it.
    /// </summary>
    private bool SleepOfferingBaton(long timeoutNs)
    {
        ReleaseBaton();
        Interlocked.Exchange(ref _idleBaton, IdleOffered);
        // Nothing below touches the hub until the baton is this thread's again.
        while (true)
        {
            _inboxSignal.Park(timeoutNs);
            int state = Interlocked.CompareExchange(ref _idleBaton, IdleNone, IdleOffered);
            if (state == IdleOffered) break; // a post or the timer: still this thread's
            if (state == IdleHandedBack)
            {
                Volatile.Write(ref _idleBaton, IdleNone);
                break;
            }
            if (state == IdleRetire)
            {
                Volatile.Write(ref _idleBaton, IdleNone); // after the park: the holder may use the inbox signal now
                return false;
            }
            // Lent: a post woke this thread before the holder's skip could apply, or the timer is due, which is the
            // holder's business now. Sleep until the baton comes back.
            timeoutNs = -1;
        }
        TakeBaton();
        return true;
    }

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
        ReleaseBaton();
        Interlocked.Exchange(ref _idleBaton, IdleHandedBack);
        _inboxSignal.Unpark();
    }

    /// <summary>
    /// Schedule found nothing to run while the idler is lent (<see cref="TryTakeNext"/>): gives the baton back to it and
    /// leaves as a hand-off does (Schedule, case Resume): a free carrier goes back to the pool, an owned one parks until
    /// its greenlet is resumed (a stand-in returns to its own park). Returns what Schedule returns.
    /// </summary>
    private bool LeaveToIdler(Carrier self, bool standIn)
    {
        if (self.Owner == null && self.IsPooled)
        {
            _carriersInUse--;
            _carriersRefusedAt = -1;
        }
        HandBackToIdler();
        if (self.Owner == null || standIn) return false;
        ParkUntilOwnerResumes(self, self, spin: false);
        return true;
    }

    /// <summary>
    /// Before the hub closes or starts sleeping in a reactor: a lent idler goes back to the pool, and this holder waits
    /// (briefly: one futex wake) until it has left the inbox signal, which has room for one sleeper and is about to be
    /// slept on differently or not at all. Baton holder only.
    /// </summary>
    private void RetireLentIdler()
    {
        if (!IdlerLent) return;
        _carriersInUse--;
        _carriersRefusedAt = -1;
        Interlocked.Exchange(ref _idleBaton, IdleRetire);
        _inboxSignal.Unpark();
        // Thread.SpinWait only: the yields and sleeps of SpinWait are patched calls, and this is hub code.
        while (Volatile.Read(ref _idleBaton) != IdleNone) Thread.SpinWait(64);
        // The idler consumed the permit as it woke; a post that came since left another, which is the holder's now.
    }
}
