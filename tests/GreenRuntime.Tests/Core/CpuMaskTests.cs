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
}
