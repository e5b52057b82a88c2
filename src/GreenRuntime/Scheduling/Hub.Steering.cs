// Steering wakes: a sleeping carrier is woken on the CPU of the thread that hands it the baton.
//
// On a VM, waking a thread whose last CPU is an idle vCPU costs ≈ 35 µs (the hypervisor must wake that vCPU),
// against ≈ 3 µs on the waker's own CPU — and the kernel prefers an idle CPU for the woken thread. A baton
// hand-off needs no parallelism (the waker parks right after), so the waker restricts the sleeping target to
// its own CPU just before the futex wake, and the target gives itself its CPUs back as soon as it runs. That
// is what PinCarriersToOneCpu achieves, without its cost: greenlet code always runs with the thread's own CPU
// mask, so threads it creates (the thread pool's, for instance) inherit no restriction.
//
// Protocol (HandBaton, then the woken carrier):
//   1. the waker sees the target's parker in the Sleeping state (a spinning or running target is left alone:
//      restricting a running thread would migrate it);
//   2. sched_setaffinity(target TID, {waker's CPU}), target.Steered = true, then Unpark (its exchange
//      publishes Steered);
//   3. the target, awake, restores the mask it had (Carrier.Unsteer) before running any hub or greenlet code.
// Not done for a pinned hub (its carriers are on one CPU already), on one-CPU machines, off Linux, or when the
// waker is going to spin (Hub.Spinning.cs): the target should then run on the other CPU, and the two of them
// hand the baton back and forth with no system call at all.
// Not done for a hub of a HubGroup of several hubs either: there the other CPUs are busy with the sibling hubs, so
// there is no idle vCPU to avoid waking, and steering only costs its system calls and makes the woken carrier
// preempt its waker. Measured with wrk (-c1000, 20 ms blocking handler) on 2 vCPUs, a group of 2 unpinned hubs:
// 29–32 k req/s and 44 µs of CPU per request with steering, 35–36 k and 37 µs without; the ASP.NET Core
// integration (unpinned hubs beside Kestrel's threads) gains 6–16 % the same way. A lone hub keeps it: one hub
// with an echo ping-pong runs 21–33 k round trips/s with steering, 17–21 k without.
// Costs two sched_setaffinity calls per slow hand-off (≈ 1 µs) to save the cross-CPU wake.
//
// Rejected: pinning every carrier (PinCarriersToOneCpu): threads created by greenlet code inherit the pin;
// a pipe or socket per carrier for its "sync" wake hint: the kernel still prefers an idle CPU.

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private static readonly bool s_canSteer = OperatingSystem.IsLinux() && Environment.ProcessorCount > 1;

    /// <summary>Whether this hub steers its wakes: it is not pinned and has no sibling hubs (see the header).</summary>
    private bool _steersWakes;

    /// <summary>Whether this hub steers its wakes (for tests).</summary>
    internal bool SteersWakes => _steersWakes;

    private void SteerWake(Carrier target)
    {
        if (_steersWakes && target.Parker.IsSleeping) target.SteerTo(Affinity.CurrentCpu());
    }

    /// <summary>Decides <see cref="_steersWakes"/>: when the hub is created, and again when it joins a group.</summary>
    private void DecideSteering() => _steersWakes = s_canSteer && _cpu < 0 && Group is not { Hubs.Count: > 1 };
}
