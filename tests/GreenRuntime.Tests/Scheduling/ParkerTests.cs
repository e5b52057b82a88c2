using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>
/// The carriers' parking spot on its own: a nudge wakes a sleeper without a permit; a park that watches then looks for
/// the permit for a while (taking the spinner slot) and sleeps again; a plain park sleeps through it.
/// </summary>
public class ParkerTests
{
    private static readonly long Long = Stopwatch.Frequency * 10; // a watch that outlasts any test's wait
    private static readonly long Short = Stopwatch.Frequency / 1000;

    private static bool Futex => OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture is
        System.Runtime.InteropServices.Architecture.X64 or System.Runtime.InteropServices.Architecture.Arm64;

    [SetUp]
    public void NeedsTheFutex()
    {
        if (!Futex) Assert.Ignore("Nudges need the futex parker (Linux x64/arm64); elsewhere Nudge does nothing.");
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > TimeSpan.FromSeconds(20)) Assert.Fail($"timed out waiting until {what}");
            Thread.Sleep(1);
        }
    }

    private sealed class Watcher
    {
        public readonly Parker Parker = new();
        public int Slot;
        public bool Caught;
        public int Missed;
        public readonly Thread Thread;

        public Watcher(long spinTicks, int id = 7)
        {
            Thread = new Thread(() => Caught = Parker.ParkWatchingWhenNudged(spinTicks, ref Slot, id, out Missed)) { IsBackground = true };
            Thread.Start();
            WaitUntil(() => Parker.IsSleeping, "the watcher sleeps");
        }
    }

    [Test]
    public void NudgeOnlyWakesASleeper()
    {
        using var parker = new Parker();
        Assert.That(parker.Nudge(), Is.False, "nobody sleeps");
        parker.Unpark();
        Assert.That(parker.Nudge(), Is.False, "a permit is waiting: nobody sleeps");
        Assert.That(parker.Park(0), Is.True);
    }

    [Test]
    public void ANudgedParkWatchesTakingTheSpinnerSlotAndCatchesThePermit()
    {
        var w = new Watcher(Long);
        Assert.That(w.Parker.Nudge(), Is.True);
        WaitUntil(() => Volatile.Read(ref w.Slot) == 7, "the nudged park takes the spinner slot to watch");
        Assert.That(w.Parker.IsSleeping, Is.False);
        w.Parker.Unpark();
        Assert.That(w.Thread.Join(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That((w.Caught, w.Missed, w.Slot), Is.EqualTo((true, 0, 0)), "caught while watching; the slot is given back");
    }

    [Test]
    public void AWatchThatSeesNoPermitGivesTheSlotBackAndSleepsAgain()
    {
        var w = new Watcher(Short);
        Assert.That(w.Parker.Nudge(), Is.True);
        WaitUntil(() => w.Parker.IsSleeping, "the watch ends and the park sleeps again");
        Assert.That(Volatile.Read(ref w.Slot), Is.Zero);
        Assert.That(w.Thread.IsAlive, Is.True, "a nudge is not a permit");
        w.Parker.Unpark();
        Assert.That(w.Thread.Join(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That((w.Caught, w.Missed), Is.EqualTo((false, 1)));
    }

    [Test]
    public void ANudgedParkSleepsAgainAtOnceWhenAnotherCarrierSpins()
    {
        var w = new Watcher(Long);
        Volatile.Write(ref w.Slot, 99);
        Assert.That(w.Parker.Nudge(), Is.True);
        WaitUntil(() => w.Parker.IsSleeping, "the park sleeps again");
        Assert.That(Volatile.Read(ref w.Slot), Is.EqualTo(99), "the other spinner keeps its slot");
        w.Parker.Unpark();
        Assert.That(w.Thread.Join(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That((w.Caught, w.Missed), Is.EqualTo((false, 0)), "it did not watch");
    }

    [Test]
    public void APlainParkSleepsThroughANudge()
    {
        using var parker = new Parker();
        bool returned = false;
        var t = new Thread(() => { parker.Park(); Volatile.Write(ref returned, true); }) { IsBackground = true };
        t.Start();
        WaitUntil(() => parker.IsSleeping, "the park sleeps");
        Assert.That(parker.Nudge(), Is.True);
        WaitUntil(() => parker.IsSleeping, "the park sleeps again");
        Assert.That(Volatile.Read(ref returned), Is.False);
        parker.Unpark();
        Assert.That(t.Join(TimeSpan.FromSeconds(20)), Is.True);
    }

    [Test]
    public void APermitGivenRightAfterANudgeIsTakenWhateverTheWatcherIsDoing()
    {
        for (int i = 0; i < 200; i++)
        {
            var w = new Watcher(i % 2 == 0 ? Long : 0);
            Assert.That(w.Parker.Nudge(), Is.True);
            w.Parker.Unpark(); // no futex wake of its own: the nudge's is on its way
            Assert.That(w.Thread.Join(TimeSpan.FromSeconds(20)), Is.True, $"round {i}: the permit was lost");
            Assert.That(Volatile.Read(ref w.Slot), Is.Zero, $"round {i}");
        }
    }
}
