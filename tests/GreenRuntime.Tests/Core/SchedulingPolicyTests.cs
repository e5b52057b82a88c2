using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Core;

/// <summary>Pooled carriers run under SCHED_BATCH (their wakes do not preempt the thread that hands them the baton); a
/// hub's own thread keeps the policy its owner gave it.</summary>
[TestFixture]
public class SchedulingPolicyTests : HubTest
{
    [Test]
    public void Greenlets_run_on_batch_carriers_and_the_hubs_own_thread_keeps_its_policy()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("scheduling policies are read with sched_getscheduler.");
        int mainPolicy = SchedulingPolicy.Current();
        // Two greenlets that sleep in turn: every resume is a hand-off to a carrier asleep in the kernel.
        var policies = Enumerable.Range(0, 2).Select(id => Green.Spawn(() =>
        {
            var seen = new List<int>();
            for (int i = 0; i < 10; i++)
            {
                Green.Sleep(2 + id);
                seen.Add(SchedulingPolicy.Current());
            }
            return seen;
        })).ToList();
        Green.JoinAll(policies);
        foreach (var greenlet in policies)
            Assert.That(greenlet.Get(), Has.All.EqualTo(SchedulingPolicy.Batch));
        Assert.That(SchedulingPolicy.Current(), Is.EqualTo(mainPolicy), "the hub's own thread keeps its policy");
        Assert.That(mainPolicy, Is.EqualTo(SchedulingPolicy.Other), "a test runner's thread runs under the default policy");
    }

    [Test]
    public void Managed_threads_that_greenlet_code_starts_run_under_the_default_policy_and_native_ones_inherit_it()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("scheduling policies are read with sched_getscheduler.");
        // The kernel copies a thread's policy to the threads it creates, but the runtime sets a managed thread's own as the
        // thread starts. What docs/core.md tells users, checked.
        var policies = Green.Spawn(() =>
        {
            int managed = -1, native = -1;
            var thread = new Thread(() => managed = SchedulingPolicy.Current());
            thread.Start();
            thread.Join();
            if (NativeThread.IsAvailable)
            {
                using var done = new ManualResetEventSlim();
                NativeThread.Start(() => { native = SchedulingPolicy.Current(); done.Set(); }, 256 * 1024);
                done.Wait();
            }
            return (managed, native);
        });
        var (managed, native) = policies.Get();
        Assert.That(managed, Is.EqualTo(SchedulingPolicy.Other), "a Thread started on a carrier");
        if (NativeThread.IsAvailable)
            Assert.That(native, Is.EqualTo(SchedulingPolicy.Batch), "a thread created with pthread_create on a carrier");
    }
}
