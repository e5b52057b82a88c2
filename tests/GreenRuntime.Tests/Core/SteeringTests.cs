using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Core;

/// <summary>Wakes steered onto the waker's CPU (Scheduling/Hub.Steering.cs) never leak into greenlet code.</summary>
[TestFixture]
public class SteeringTests : HubTest
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
    public void A_lone_hub_steers_and_the_hubs_of_a_group_of_several_do_not()
    {
        bool machineCan = OperatingSystem.IsLinux() && Environment.ProcessorCount > 1;
        Assert.That(Hub.Current.SteersWakes, Is.EqualTo(machineCan), "a lone, unpinned hub steers where the machine allows");
        using (var group = new HubGroup(2))
            Assert.That(group.Hubs.Select(h => h.SteersWakes), Has.All.False, "its sibling hubs keep the other CPUs busy");
        using (var single = new HubGroup(1))
            Assert.That(single.Hubs[0].SteersWakes, Is.EqualTo(machineCan), "a group of one is a lone hub");
        using (var pinned = new HubGroup(new HubGroupOptions { HubCount = 1, PinHubsToCpus = true }))
            Assert.That(pinned.Hubs[0].SteersWakes, Is.False, "a pinned hub's carriers share its CPU already");
    }
}
