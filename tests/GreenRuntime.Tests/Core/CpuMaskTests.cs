using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Core;

/// <summary>On an unpinned hub, greenlet code runs with its thread's own CPU mask: threads it creates inherit nothing.</summary>
[TestFixture]
public class CpuMaskTests : HubTest
{
    [Test]
    public void Greenlet_code_always_runs_with_its_threads_own_CPU_mask()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("CPU masks are read with sched_getaffinity.");
        var mainMask = Affinity.Save();
        var seen = new List<(int Greenlet, ulong[]? Mask)>();
        // Two greenlets that sleep in turn: every resume is a hand-off to a carrier asleep in the kernel.
        var all = Enumerable.Range(0, 2).Select(id => Green.Spawn(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                Green.Sleep(3 + id);
                seen.Add((id, Affinity.Save()));
            }
        })).ToList();
        Green.JoinAll(all);
        Assert.That(seen, Has.Count.EqualTo(40));
        var first = seen[0].Mask;
        foreach (var (id, mask) in seen)
            Assert.That(mask, Is.EqualTo(first), $"greenlet {id} ran with a restricted CPU mask");
        Assert.That(Affinity.Save(), Is.EqualTo(mainMask), "the hub's own thread keeps its mask");
    }

    [Test]
    public void Carriers_created_for_a_pinned_hub_run_an_unpinned_hubs_greenlets_on_every_CPU()
    {
        if (!OperatingSystem.IsLinux() || Environment.ProcessorCount < 2) Assert.Ignore("needs sched_getaffinity and two CPUs.");
        var everyCpu = Affinity.Save();
        // A pinned hub on a thread of its own makes the shared pool create carriers (a thread inherits the CPU mask of
        // the thread that creates it: the pinned hub's). 300 greenlets blocked at once outrun whatever the pool holds.
        var pinnedThread = new Thread(() =>
        {
            using var pinned = new Hub(new HubOptions { PinCarriersToOneCpu = true });
            Green.JoinAll(Enumerable.Range(0, 300).Select(_ => Green.Spawn(() => Green.Sleep(30))).ToList());
        });
        pinnedThread.Start();
        Green.Wait(Task.Run(pinnedThread.Join));

        // This fixture's hub is not pinned: the same carriers, rented again (the pool hands out the latest returned
        // first), must run its greenlets with the CPUs the process has.
        var masks = Enumerable.Range(0, 300).Select(_ => Green.Spawn(() =>
        {
            Green.Sleep(30);
            return Affinity.Save();
        })).ToList();
        Green.JoinAll(masks);
        Assert.That(masks.Count(g => !g.Get()!.SequenceEqual(everyCpu!)), Is.Zero, "greenlets of an unpinned hub ran restricted to one CPU");
    }
}
