using System.Diagnostics;
using System.Reflection;
using System.Reflection.PortableExecutable;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A static constructor reached from ReadyToRun (precompiled) code: the runtime starts it in its native fixup of the
/// class's static base, where no managed method can see it, and a second greenlet that touches the class waits for it
/// natively, holding the baton. The greenlet running the constructor must therefore not park inside it. ReadyToRunTargets
/// is published with crossgen2 next to the tests (ReadyToRun/) and loaded from there; the hub runs on a thread of its own,
/// so a deadlock fails the test instead of hanging the run.
/// </summary>
public class ReadyToRunClassInitTests : PatchedHubTest
{
    private const int Greenlets = 20;
    private static readonly TimeSpan DeadlockLimit = TimeSpan.FromSeconds(30);

    private static Assembly LoadTargets()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "ReadyToRun", "ReadyToRunTargets.dll");
        using (var pe = new PEReader(File.OpenRead(path)))
            Assume.That(pe.PEHeaders.CorHeader?.ManagedNativeHeaderDirectory.Size, Is.GreaterThan(0), $"{path} has no ReadyToRun code");
        return Assembly.LoadFrom(path);
    }

    [Test]
    public void GreenletsTouchingAClassWhoseInitialiserSleepsFromPrecompiledCodeDoNotDeadlockTheHub()
    {
        var targets = LoadTargets();
        var touch = targets.GetType("ReadyToRunTargets.Touch")!.GetMethod("Sleeping")!.CreateDelegate<Func<int>>();
        var values = new int[Greenlets];
        TimeSpan afterwards = default;
        OnOwnHub(() =>
        {
            var all = Enumerable.Range(0, Greenlets).Select(i => Green.Spawn(() => values[i] = touch())).ToList();
            Green.JoinAll(all, raiseError: true);
            // Out of the constructor, the same thread's sleeps park again: two 300 ms sleeps at once take about 300 ms.
            var watch = Stopwatch.StartNew();
            Green.JoinAll([Green.Spawn(() => Thread.Sleep(300)), Green.Spawn(() => Thread.Sleep(300))], raiseError: true);
            afterwards = watch.Elapsed;
        });
        Assert.That(values, Is.All.EqualTo(42));
        Assert.That((int)targets.GetType("ReadyToRunTargets.SleepingStatics")!.GetField("Runs")!.GetValue(null)!, Is.EqualTo(1), "the static constructor ran once");
        Assert.That(afterwards, Is.LessThan(TimeSpan.FromMilliseconds(550)), "sleeps outside the constructor park cooperatively");
    }

    private static void OnOwnHub(Action body) =>
        OwnHub.Run(body, DeadlockLimit, "the hub deadlocked: a greenlet waited for the class's initialisation holding the baton");
}
