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
// Costs two sched_setaffinity calls per slow hand-off (≈ 1 µs) to save the cross-CPU wake.
//
// Rejected: pinning every carrier (PinCarriersToOneCpu): threads created by greenlet code inherit the pin;
// a pipe or socket per carrier for its "sync" wake hint: the kernel still prefers an idle CPU.

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private static readonly bool s_canSteer = OperatingSystem.IsLinux() && Environment.ProcessorCount > 1;

    private void SteerWake(Carrier target)
    {
        if (s_canSteer && _cpu < 0 && target.Parker.IsSleeping) target.SteerTo(Affinity.CurrentCpu());
    }
}
