extern alias PatchAssembly;

using System.Diagnostics;
using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Base of fixtures that run with every patch set applied (once per fixture, undone after it: detours are
/// process-global) and a fresh hub on the test thread for each test.
/// </summary>
public abstract class PatchedHubTest
{
    protected Hub HubUnderTest { get; private set; } = null!;

    protected PatchAssembly::GreenRuntime.PatchReport Report { get; private set; } = null!;

    [OneTimeSetUp]
    public void PatchEverything() => Report = Patching.All();

    [OneTimeTearDown]
    public void UndoEverything() => Patching.UndoAll();

    [SetUp]
    public void CreateHub() => HubUnderTest = new Hub(new HubOptions { MaxBlockingTime = null });

    [TearDown]
    public void DisposeHub() => HubUnderTest.Dispose();

    /// <summary>Runs <paramref name="body"/> in <paramref name="count"/> greenlets and returns how long until all finished.</summary>
    protected static TimeSpan RunInGreenlets(int count, Action<int> body)
    {
        var watch = Stopwatch.StartNew();
        var greenlets = Enumerable.Range(0, count).Select(i => Green.Spawn(() => body(i))).ToList();
        Green.JoinAll(greenlets, raiseError: true);
        return watch.Elapsed;
    }

    /// <summary>How long one call takes on this machine now (the reference for "about the time of one call").</summary>
    protected static TimeSpan Time(Action call)
    {
        var watch = Stopwatch.StartNew();
        call();
        return watch.Elapsed;
    }

    /// <summary>Keeps the hub's baton for 100 ms without a cooperative call: other threads go on (a released wait returns
    /// and queues for the baton), but no greenlet of the hub runs meanwhile.</summary>
    protected static void HoldTheBaton()
    {
        var busy = Stopwatch.StartNew();
        while (busy.ElapsedMilliseconds < 100) Thread.SpinWait(100);
    }
}
