extern alias PatchAssembly;

using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.PatchSets;
using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>The Patch API: report, idempotence, undo, and calls compiled before patching.</summary>
[TestFixture]
public class PatchAllTests
{
    [TearDown]
    public void Undo() => Patching.UndoAll();

    [Test]
    public void AllPatchesEverySetAndReportsEachRefusalWithAReason()
    {
        var report = Patching.All();
        TestContext.Out.WriteLine(report);
        var sleep = typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!;
        Assert.Multiple(() =>
        {
            Assert.That(report.Patched.Select(p => p.Set).Distinct(), Is.EquivalentTo(new[] { "Time", "Sockets", "Dns", "Files", "Tasks", "Threading", "Processes", "Stdin" }));
            Assert.That(Patching.IsPatched(sleep), Is.True);
            Assert.That(Patching.Applied, Has.Count.EqualTo(report.Patched.Count));
            Assert.That(report.Refused, Is.Not.Empty, "the design limits (Monitor, Lock, ...) are always reported");
            Assert.That(report.Refused.Select(r => r.Reason), Has.All.Length.GreaterThan(20));
            Assert.That(report.Refused.Any(r => r.Description.Contains("Monitor")), Is.True);
        });
    }
}
