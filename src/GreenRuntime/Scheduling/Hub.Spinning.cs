// Spinning before parking, and waking the next carrier ahead of its turn: cheap hand-offs.
//
// A baton hand-off wakes a parked carrier with a futex. That costs ≈ 3 µs when both threads share a CPU, but
// ≈ 35 µs on a VM when the woken thread sleeps on another, idle, vCPU (the hypervisor must wake that vCPU;
// docs/BENCHMARKS.md). When a greenlet is handed the baton back soon after it parked (ping-pong, a
// request/response pair, a producer and a consumer), its carrier can instead watch its parker for a moment:
// the hand-back is then a store the other CPU sees within ~100 ns, with no system call on either side.
//
// When a carrier spins (all must hold; HubOptions.SpinBeforeParking turns it off):
//   * the machine has more than one CPU and the hub is not pinned to one (a spinner on the holder's CPU would
//     only delay it);
//   * its previous park was short (≤ 100 µs), and it is not cooling down (adaptive: a carrier that waits for
//     I/O or for a long queue of other greenlets never spins; one whose spins fail — typically because the
//     machine is oversubscribed and the waker or the spinner itself was preempted — sleeps at once for the
//     next 1, 2, 4 ... 16 parks);
//   * no other carrier of the hub spins now — or the one that does is the carrier this thread has just
//     handed the baton to, which stops spinning as it takes it (ping-pong: each side takes the slot over from
//     the other). At most one spinner per hub, so spinning never takes more than one CPU from the baton
//     holder and the rest of the process.
// A spin that sees no permit within the limit (50 µs) falls through to the futex park, having cost at most
// the limit in CPU time.
//
// Nudging the next carrier. In a chain of hand-offs among many greenlets (a hundred echo connections served by
// blocking greenlets, one hub) no carrier is handed the baton back soon after it parked, so none spins, and every
// hand-off waits for the wake of a sleeping thread. Yet the baton holder can see who is likely next: the front of
// the ready queues. So, as it hands the baton on, it nudges the carrier of the next queued resume (Parker.Nudge: a
// futex wake without a permit). That carrier wakes while the baton's new holder runs, watches for its permit for up
// to the same 50 µs (ParkWatchingWhenNudged) and sleeps again if it does not come. The wake's latency is then paid
// beside the holder's work instead of in the hand-off, which becomes a store. A nudge goes only when:
//   * spinning is allowed at all (the conditions above but the short last park), and the hub is not one of a group
//     with a hub per CPU (every CPU has a baton holder to keep busy);
//   * the holder does not spin itself (a ping-pong is served better by the hand-back);
//   * no carrier of the hub spins but the one just handed the baton (which stops as it takes it): the nudged carrier
//     takes the one spinner slot when it wakes, or sleeps again at once;
//   * nudges to this hub have been paying: a nudged carrier that sees its permit scores +3, one that does not -1,
//     and below zero only every 16th nudge goes, to notice when they would pay again. They pay when the other CPU is
//     idle; when other threads of the process need it (Kestrel's thread pool beside an ASP.NET Core hub) they miss
//     and stop.
// Measured on one hub of this 2-vCPU VM, alternating 3 runs each: 100 blocking echo connections in one process
// 30.8–44.6 k round trips/s with nudges against 21.4–25.9 k without; ASP.NET Core's 20 ms blocking endpoint, the
// 10,000 random sleepers and echo across processes unchanged within the noise (nudges mostly off there).
//
// Rejected: spinning every carrier (with N greenlets cycling faster than the limit, N spinners would preempt the
// baton holder itself); nudging with no score (ASP.NET Core's blocking endpoint fell from 23 k to 16–19 k
// requests/s: 2 % of the nudges caught the baton, and the watchers took CPU time from Kestrel's threads); a score
// that needs 4 catches in 5 (the few probes it lets through miss more often than a steady stream of nudges does, so
// it never turned nudging back on for the echo connections); spinning in the idle hub's wait (nothing bounds when
// I/O arrives); steering a sleeping carrier onto the waker's CPU before waking it (sched_setaffinity on the target,
// which restores its own mask once awake), to spare the wake of an idle vCPU. Two system calls per hand-off, and the
// woken carrier then waits for its waker to sleep: measured against no steering on one hub of this 2-vCPU VM, 100
// echo connections in one process 21.6–25.7 k round trips/s (p99 6.5–9.9 ms) against 30.7–33.1 k (p99 4.4–4.7 ms),
// across processes 41.6–42.1 k against 50.0–53.7 k, HTTP with wrk at 1,000 connections 16.8–17.1 k against 17.8–18.6
// k, 10,000 warm sleepers 0.28–0.34 s against 0.26 s; one ping-pong pair the same (38–39 k).

using System.Diagnostics;
using System.Runtime.CompilerServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>How long a carrier may watch for the baton before it sleeps: longer than one cross-CPU futex wake, so one side that fell back to sleeping does not make the other side's spin fail too.</summary>
    private static readonly long s_spinLimitTicks = Stopwatch.Frequency * 50 / 1_000_000;

    /// <summary>A park at most this long makes the next one spin: it covers a cross-CPU futex wake (≈ 35 µs), so a ping-pong can start spinning.</summary>
    private static readonly long s_shortParkTicks = Stopwatch.Frequency * 100 / 1_000_000;

    private static readonly bool s_canSpin = Environment.ProcessorCount > 1;

    /// <summary>The id of the carrier of this hub that spins now, or 0 (the one spinner slot).</summary>
    private int _spinning;

    /// <summary>Whether a carrier of this hub is spinning now (for tests).</summary>
    internal bool HasSpinner => Volatile.Read(ref _spinning) != 0;

    /// <summary>Whether <paramref name="self"/>, which has handed the baton away, may spin for it before it sleeps. It reads
    /// only the hub's fixed settings and the carrier's own fields, so it needs no baton.</summary>
    private bool MaySpin(Carrier self) => MayWatch && self.SpinCooldown == 0 && self.LastParkTicks <= s_shortParkTicks;

    /// <summary>Whether carriers of this hub may watch for the baton at all, spinning or nudged (see the header).</summary>
    private bool MayWatch => s_canSpin && _cpu < 0 && Options.SpinBeforeParking;

    /// <summary>
    /// Parks <paramref name="self"/>, which has just handed the baton to <paramref name="handedTo"/>, spinning
    /// first when <paramref name="spin"/> (decided by <see cref="MaySpin"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private void ParkCarrier(Carrier self, Carrier handedTo, bool spin)
    {
        long started = Stopwatch.GetTimestamp();
        if (self.SpinCooldown > 0)
        {
            self.SpinCooldown--;
        }
        else if (spin && TakeSpinnerSlot(self, handedTo))
        {
            // The watch releases the slot before this thread sleeps (unless it was taken over meanwhile).
            if (self.Parker.Watch(s_spinLimitTicks, ref _spinning, self.Id))
            {
                self.SpinFailures = 0;
            }
            else
            {
                // Exponential back-off: 1, 2, 4 ... 16 parks without spinning after consecutive failures.
                self.SpinFailures = Math.Min(self.SpinFailures + 1, 5);
                self.SpinCooldown = 1 << (self.SpinFailures - 1);
            }
        }
        ParkUntilHanded(self); // takes a permit the spin saw at once
        self.LastParkTicks = Stopwatch.GetTimestamp() - started;
    }

    /// <summary>Parks <paramref name="self"/> until it is handed the baton, watching for it whenever a nudge wakes it
    /// ahead of its turn, and scores how the nudges to this hub fare.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // no frame under a parked greenlet (Hub.Scheduler.cs, "Frames")
    private void ParkUntilHanded(Carrier self)
    {
        bool caught = self.Parker.ParkWatchingWhenNudged(s_spinLimitTicks, ref _spinning, self.Id, out int missed);
        if (!caught && missed == 0) return;
        if (caught) Interlocked.Increment(ref _nudgesCaught);
        // Racy by design: carriers of the hub score concurrently, and a lost update only delays the adaptation.
        int score = Volatile.Read(ref _nudgeScore) + (caught ? NudgeCatchGain : 0) - missed;
        Volatile.Write(ref _nudgeScore, Math.Clamp(score, -NudgeScoreFloor, NudgeScoreCeiling));
    }

    /// <summary>
    /// Before <paramref name="self"/> hands the baton to <paramref name="handedTo"/>: the carrier likely to be handed it
    /// next, if a nudge may go now. That is the carrier of the loop's oldest wake when it resumes a greenlet (what the
    /// order takes next but for a start, Hub.Order.cs), else of the front of the other ready queue when that is a
    /// resume. Hub-only: it reads the ready queues.
    /// </summary>
    private Carrier? CarrierToNudge(Carrier self, Carrier handedTo)
    {
        if (!MayWatch) return null;
        // A hub per CPU: every CPU has a baton holder to keep busy, so a watcher would only take a CPU from one.
        if (Group is { } group && group.Hubs.Count >= Environment.ProcessorCount) return null;
        // Nudges that miss: only every 16th goes, to notice when they would catch again.
        if (Volatile.Read(ref _nudgeScore) < 0 && (++_nudgeProbes & 15) != 0) return null;
        var carrier = QueuedResumeCarrier(_wakes) ?? QueuedResumeCarrier(_ready);
        return carrier == self || carrier == handedTo ? null : carrier;
    }

    private static Carrier? QueuedResumeCarrier(Deque<RunItem> queue) =>
        queue.Count > 0 && queue.PeekFront() is { Kind: RunKind.Resume, Greenlet.Carrier: { } carrier } ? carrier : null;

    /// <summary>Wakes <paramref name="carrier"/> (chosen by <see cref="CarrierToNudge"/>) to watch for the baton, unless a
    /// carrier of the hub other than <paramref name="handedTo"/> (which stops as it takes the baton) spins now. Any thread:
    /// the baton has been handed away.</summary>
    private void Nudge(Carrier carrier, Carrier handedTo)
    {
        int spinner = Volatile.Read(ref _spinning);
        if (spinner != 0 && spinner != handedTo.Id) return;
        if (carrier.Parker.Nudge()) Interlocked.Increment(ref _nudgesSent);
    }

    /// <summary>Nudges sent to carriers of this hub, and nudged carriers that saw the baton while they watched (run info, tests).</summary>
    internal long NudgesSent => Volatile.Read(ref _nudgesSent);

    internal long NudgesCaught => Volatile.Read(ref _nudgesCaught);

    private long _nudgesSent, _nudgesCaught;

    /// <summary>How nudges fare: a catch scores <see cref="NudgeCatchGain"/>, a miss -1, so they go on while more than
    /// one in four catches. Below zero only every 16th nudge goes.</summary>
    private int _nudgeScore, _nudgeProbes;

    private const int NudgeCatchGain = 3, NudgeScoreFloor = 64, NudgeScoreCeiling = 16;

    private bool TakeSpinnerSlot(Carrier self, Carrier handedTo)
    {
        int spinner = Volatile.Read(ref _spinning);
        return (spinner == 0 || spinner == handedTo.Id) && Interlocked.CompareExchange(ref _spinning, self.Id, spinner) == spinner;
    }
}
