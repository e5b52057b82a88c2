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
        var allPoints = new PatchSet[] { TimePatchSet.Instance, SocketsPatchSet.Instance, DnsPatchSet.Instance, FilesPatchSet.Instance, TasksPatchSet.Instance, ThreadingPatchSet.Instance, LocksPatchSet.Instance, ProcessesPatchSet.Instance, StdinPatchSet.Instance }
            .SelectMany(s => s.Points).Select(p => p.Description).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(report.Patched.Select(p => p.Set).Distinct(), Is.SupersetOf(new[] { "Time", "Sockets", "Dns", "Files", "Tasks", "Threading", "Locks", "Processes" }));
            Assert.That(report.Patched.Select(p => p.Description).Concat(report.Refused.Select(r => r.Description)), Is.SupersetOf(allPoints),
                "every patch point is either patched or refused, never silently skipped");
            Assert.That(Patching.IsPatched(sleep), Is.True);
            Assert.That(Patching.Applied.Select(p => p.Description), Is.EqualTo(report.Patched.Select(p => p.Description)));
            // Monitor waits were a design limit until the Locks set; busy-waiting still is one.
            Assert.That(report.Refused.Any(r => r.Description.Contains("SpinWait")), Is.True, "design limits are reported too");
            Assert.That(report.Refused.Select(r => r.Reason), Has.All.Length.GreaterThan(20));
        });
    }

    [Test]
    public void PatchingTwiceIsANoOpThatSaysSo()
    {
        var first = Patching.All();
        var second = Patching.All();
        var time = Patching.Time();
        Assert.Multiple(() =>
        {
            Assert.That(second.Patched, Is.Empty);
            Assert.That(second.AlreadyPatched.Select(p => p.Method), Is.EquivalentTo(first.Patched.Select(p => p.Method)));
            Assert.That(time.AlreadyPatched.Select(p => p.Set), Has.All.EqualTo("Time").And.Not.Empty);
        });
    }

    [Test]
    public void PatchingFromSeveralThreadsAtOncePatchesEachMethodOnce()
    {
        var reports = new PatchAssembly::GreenRuntime.PatchReport[4];
        var threads = Enumerable.Range(0, reports.Length).Select(i => new Thread(() => reports[i] = Patching.All())).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var patchedOnce = reports.SelectMany(r => r.Patched).Select(p => p.Method).ToList();
        Assert.That(patchedOnce, Is.Unique);
        Assert.That(patchedOnce, Has.Count.EqualTo(Patching.Applied.Count));
    }

    [Test]
    public void UndoAllRestoresTheOriginalsAndAllowsPatchingAgain()
    {
        var sleep = typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!;
        Patching.Time();
        Patching.UndoAll();
        Assert.That(Patching.IsPatched(sleep), Is.False);
        Assert.That(Patching.Applied, Is.Empty);
        using (var hub = new Hub())
        {
            // Unpatched, Thread.Sleep on a greenlet blocks the hub: two sleeps in two greenlets take twice as long.
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Green.JoinAll([Green.Spawn(() => Thread.Sleep(100)), Green.Spawn(() => Thread.Sleep(100))]);
            Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(190)));
            Assert.That(Patching.Time().Patched.Select(p => p.Method), Does.Contain(sleep));
            watch.Restart();
            Green.JoinAll([Green.Spawn(() => Thread.Sleep(100)), Green.Spawn(() => Thread.Sleep(100))]);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(190)));
        }
    }
}
