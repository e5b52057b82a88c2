// Spinning before parking: the cheap hand-back.
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
// Rejected: spinning every carrier (with N greenlets cycling faster than the limit, N spinners would
// preempt the baton holder itself); spinning in the idle hub's wait (nothing bounds when I/O arrives);
// steering a sleeping carrier onto the waker's CPU before waking it (sched_setaffinity on the target, which
// restores its own mask once awake), to spare the wake of an idle vCPU. Two system calls per hand-off, and the
// woken carrier then waits for its waker to sleep: measured against no steering on one hub of this 2-vCPU VM,
// 100 echo connections in one process 21.6–25.7 k round trips/s (p99 6.5–9.9 ms) against 30.7–33.1 k (p99
// 4.4–4.7 ms), across processes 41.6–42.1 k against 50.0–53.7 k, HTTP with wrk at 1,000 connections 16.8–17.1 k
// against 17.8–18.6 k, 10,000 warm sleepers 0.28–0.34 s against 0.26 s; one ping-pong pair the same (38–39 k).

using System.Diagnostics;
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
    private bool MaySpin(Carrier self) =>
        s_canSpin && _cpu < 0 && Options.SpinBeforeParking && self.SpinCooldown == 0 && self.LastParkTicks <= s_shortParkTicks;

    /// <summary>
    /// Parks <paramref name="self"/>, which has just handed the baton to <paramref name="handedTo"/>, spinning
    /// first when <paramref name="spin"/> (decided by <see cref="MaySpin"/>).
    /// </summary>
    private void ParkCarrier(Carrier self, Carrier handedTo, bool spin)
    {
        long started = Stopwatch.GetTimestamp();
        if (self.SpinCooldown > 0)
        {
            self.SpinCooldown--;
            self.Parker.Park();
        }
        else if (spin && TakeSpinnerSlot(self, handedTo))
        {
            // The slot is released by this thread before it sleeps (unless taken over meanwhile).
            if (self.Parker.SpinThenPark(s_spinLimitTicks, ref _spinning, self.Id))
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
        else
        {
            self.Parker.Park();
        }
        self.LastParkTicks = Stopwatch.GetTimestamp() - started;
    }

    private bool TakeSpinnerSlot(Carrier self, Carrier handedTo)
    {
        int spinner = Volatile.Read(ref _spinning);
        return (spinner == 0 || spinner == handedTo.Id) && Interlocked.CompareExchange(ref _spinning, self.Id, spinner) == spinner;
    }
}
