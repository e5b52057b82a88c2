using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>What WaitAny/WaitAll throw for bad calls, for comparing patched with original, on and off the hub.</summary>
internal static class WaitMultipleMisuse
{
    public static List<string> Outcomes()
    {
        var seen = new List<string>();
        void Note(Func<object> a)
        {
            try
            {
                seen.Add($"returned {a()}");
            }
            catch (Exception e)
            {
                seen.Add(e.GetType().Name);
            }
        }
        using var a = new AutoResetEvent(false);
        using var m = new ManualResetEvent(true);
        var disposed = new AutoResetEvent(false);
        disposed.Dispose();
        Note(() => WaitHandle.WaitAny([]));
        Note(() => WaitHandle.WaitAny(null!));
        Note(() => WaitHandle.WaitAll([a, a], 10));
        Note(() => WaitHandle.WaitAny([a, a], 10));
        Note(() => WaitHandle.WaitAny([a, disposed], 10));
        Note(() => WaitHandle.WaitAll([a], -2));
        Note(() => WaitHandle.WaitAny([a], TimeSpan.FromMilliseconds(-2)));
        Note(() => WaitHandle.WaitAny(Enumerable.Range(0, 65).Select(_ => (WaitHandle)m).ToArray(), 10));
        Note(() => WaitHandle.WaitAny([a, m], 10));
        Note(() => WaitHandle.WaitAll([a, m], 10));
        Note(() => WaitHandle.WaitAny([a, null!], 10));
        return seen;
    }
}

/// <summary>WaitHandle.WaitAny/WaitAll on greenlets: they park only the greenlet and acquire exactly what the originals do.</summary>
[TestFixture]
public class WaitMultipleOnHubTests : PatchedHubTest
{
    private static Greenlet Ticker(Func<bool> until, Action tick) => Green.Spawn(() =>
    {
        while (!until())
        {
            Thread.Sleep(5);
            tick();
        }
    });

    [Test]
    public void WaitAnyParksUntilAnotherGreenletSignalsAndAcquiresThatHandleOnly()
    {
        using var a = new AutoResetEvent(false);
        using var b = new AutoResetEvent(false);
        using var s = new Semaphore(0, 5);
        int result = -1, ticks = 0;
        var waiter = Green.Spawn(() => result = WaitHandle.WaitAny([a, b, s]));
        var ticker = Ticker(() => waiter.Ready, () => ticks++);
        Green.Sleep(60);
        Assert.That(waiter.WaitReason, Is.EqualTo(WaitReason.Event));
        Assert.That(ticks, Is.GreaterThan(2), "the ticker ran while WaitAny waited");
        s.Release();
        Green.JoinAll([waiter, ticker], TimeSpan.FromSeconds(5), raiseError: true);
        Assert.That(result, Is.EqualTo(2));
        Assert.That(s.WaitOne(0), Is.False, "the semaphore's count went to the waiter");
        Assert.That(a.WaitOne(0) || b.WaitOne(0), Is.False, "the other handles were not touched");
    }

    [Test]
    public void WaitAnyAcquiresExactlyOneWhenSeveralAreSignalledAtOnce()
    {
        using var a = new AutoResetEvent(false);
        using var b = new AutoResetEvent(false);
        using var s = new Semaphore(0, 5);
        for (int round = 0; round < 20; round++)
        {
            int result = -1;
            var waiter = Green.Spawn(() => result = WaitHandle.WaitAny([a, b, s], 5000));
            Green.Sleep(2);
            // Signalled from another thread, all at once: the registrations race.
            var signaller = new Thread(() =>
            {
                b.Set();
                s.Release();
                a.Set();
            });
            signaller.Start();
            waiter.Join();
            signaller.Join(); // patched Join: parks
            Assert.That(result, Is.InRange(0, 2), $"round {round}");
            // A registration whose wait was satisfied just as the waiter gave up gives its signal back from a
            // thread-pool callback, shortly after: collect the signals left until two are found or a second passed.
            int left = 0;
            var deadline = Stopwatch.StartNew();
            while (left < 2 && deadline.ElapsedMilliseconds < 1000)
            {
                left += (a.WaitOne(0) ? 1 : 0) + (b.WaitOne(0) ? 1 : 0) + (s.WaitOne(0) ? 1 : 0);
                if (left < 2) Green.Sleep(2);
            }
            Green.Sleep(10);
            left += (a.WaitOne(0) ? 1 : 0) + (b.WaitOne(0) ? 1 : 0) + (s.WaitOne(0) ? 1 : 0);
            Assert.That(left, Is.EqualTo(2), $"round {round}: exactly one of three signals was consumed (result {result})");
        }
    }

    [Test]
    public void WaitAnyTimesOutWithoutConsumingAndAKillGivesEverythingBack()
    {
        using var a = new AutoResetEvent(false);
        using var s = new Semaphore(0, 5);
        int ticks = 0;
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 5; i++)
            {
                Thread.Sleep(5);
                ticks++;
            }
        });
        Assert.That(WaitHandle.WaitAny([a, s], 80), Is.EqualTo(WaitHandle.WaitTimeout));
        Assert.That(WaitHandle.WaitAny([a, s], TimeSpan.FromMilliseconds(20)), Is.EqualTo(WaitHandle.WaitTimeout));
        ticker.Join();
        Assert.That(ticks, Is.EqualTo(5));
        var killed = Green.Spawn(() => WaitHandle.WaitAny([a, s]));
        Green.Sleep(20);
        killed.Kill();
        a.Set();
        s.Release();
        Green.Sleep(20); // registrations that fire late give back what they took
        Assert.That(a.WaitOne(0), Is.True);
        Assert.That(s.WaitOne(0), Is.True);
    }

    [Test]
    public void WaitAllParksUntilEveryHandleIsSignalledAndAcquiresThemTogether()
    {
        using var manual = new ManualResetEvent(true); // stays set throughout: must not make the waiter spin
        using var a = new AutoResetEvent(false);
        using var s = new Semaphore(0, 5);
        bool? result = null;
        int ticks = 0;
        var waiter = Green.Spawn(() => result = WaitHandle.WaitAll([manual, a, s]));
        var ticker = Ticker(() => waiter.Ready, () => ticks++);
        Green.Sleep(100);
        a.Set();
        Green.Sleep(100);
        Assert.That(waiter.Ready, Is.False, "two of three is not all");
        Assert.That(a.WaitOne(0), Is.True, "a partial WaitAll holds nothing");
        a.Set();
        s.Release();
        Green.JoinAll([waiter, ticker], TimeSpan.FromSeconds(5), raiseError: true);
        Assert.That(result, Is.True);
        Assert.That(ticks, Is.GreaterThan(5));
        Assert.That(a.WaitOne(0), Is.False, "acquired");
        Assert.That(s.WaitOne(0), Is.False, "acquired");
        Assert.That(manual.WaitOne(0), Is.True, "a manual-reset event stays set");
    }

    [Test]
    public void WaitAllTimesOutHoldingNothing()
    {
        using var a = new AutoResetEvent(true);
        using var b = new AutoResetEvent(false);
        var watch = Stopwatch.StartNew();
        Assert.That(WaitHandle.WaitAll([a, b], 60), Is.False);
        Assert.That(WaitHandle.WaitAll([a, b], TimeSpan.FromMilliseconds(20), false), Is.False);
        Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(75)));
        Assert.That(a.WaitOne(0), Is.True, "the signalled handle was left signalled");
    }

    [Test]
    public void ASetWithAMutexKeepsTheOriginalWait()
    {
        using var mutex = new Mutex();
        using var e = new ManualResetEvent(false);
        Assert.That(WaitHandle.WaitAny([e, mutex], 50), Is.EqualTo(1), "an unowned mutex is acquired at once, as by the original");
        mutex.ReleaseMutex();
        Assert.That(WaitHandle.WaitAll([e, mutex], 30), Is.False);
    }

    [Test]
    public void MisusesThrowWhatTheOriginalThrows()
    {
        var onHub = WaitMultipleMisuse.Outcomes();
        List<string>? offHub = null;
        var thread = new Thread(() => offHub = WaitMultipleMisuse.Outcomes());
        thread.Start();
        thread.Join();
        TestContext.Out.WriteLine(string.Join("\n", onHub));
        Assert.That(onHub, Is.EqualTo(offHub));
    }
}

/// <summary>Off a hub, the patched WaitAny/WaitAll are the originals.</summary>
[TestFixture]
public class WaitMultipleOffHubTests
{
    private List<string> _unpatched = null!;

    [OneTimeSetUp]
    public void PatchEverything()
    {
        Assert.That(Hub.CurrentOrNull, Is.Null, "these tests need a thread without a hub");
        _unpatched = WaitMultipleMisuse.Outcomes();
        PatchAssemblyAccess.All();
    }

    [OneTimeTearDown]
    public void Undo() => PatchAssemblyAccess.UndoAll();

    [Test]
    public void MisusesAndResultsAreThoseOfTheOriginal() => Assert.That(WaitMultipleMisuse.Outcomes(), Is.EqualTo(_unpatched));

    [Test]
    public void WaitAnyAndWaitAllBlockAndAcquireLikeTheOriginal()
    {
        using var a = new AutoResetEvent(false);
        using var s = new Semaphore(0, 2);
        var watch = Stopwatch.StartNew();
        Assert.That(WaitHandle.WaitAny([a, s], 50), Is.EqualTo(WaitHandle.WaitTimeout));
        Assert.That(WaitHandle.WaitAll([a, s], 50), Is.False);
        Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(95)));
        var setter = new Thread(() =>
        {
            Thread.Sleep(30);
            s.Release();
            a.Set();
        });
        setter.Start();
        Assert.That(WaitHandle.WaitAll([a, s]), Is.True);
        setter.Join();
        Assert.That(a.WaitOne(0) || s.WaitOne(0), Is.False);
        s.Release();
        Assert.That(WaitHandle.WaitAny([a, s]), Is.EqualTo(1));
    }
}
