using System.Diagnostics;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>Originals under GC pressure; detour/undo racing callers; concurrent creation.</summary>
[TestFixture]
public class StressTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void MillionOriginalCallsThroughTrampolineWhileGcRuns()
    {
        using Detour d = Detour.Create(Method(typeof(StressTargets), nameof(StressTargets.Format)), Method(typeof(StressTargets), nameof(StressTargets.FormatReplacement)));
        var original = d.GetOriginal<Func<object, int, string>>();
        Assert.That(StressTargets.Format("x", 1), Is.EqualTo("replaced"));

        using var stop = new CancellationTokenSource();
        long gcs = 0;
        var collector = new Thread(() =>
        {
            // A GC every millisecond (every tenth a full one) walks the caller's stack through the trampoline
            // thousands of times; back-to-back full GCs only made the run slow (161 s with ReadyToRun=0).
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(gcs % 10 == 0 ? 2 : 0);
                gcs++;
                Thread.Sleep(1);
            }
        });
        collector.Start();
        var watch = Stopwatch.StartNew();
        try
        {
            for (int i = 0; i < 1_000_000; i++)
            {
                object box = i;
                string s = original(box, i);
                if (s != StressTargets.Expected(i))
                {
                    Assert.Fail($"call {i} returned {s}");
                }
            }
        }
        finally
        {
            stop.Cancel();
            collector.Join();
        }

        TestContext.Out.WriteLine($"1,000,000 original calls in {watch.ElapsedMilliseconds} ms with {gcs} forced GCs");
        Assert.That(gcs, Is.GreaterThan(0));
    }

    [Test]
    public void HammerWhileDetouringAndUndoingRepeatedly()
    {
        var target = Method(typeof(StressTargets), nameof(StressTargets.Hammered));
        var replacement = Method(typeof(StressTargets), nameof(StressTargets.HammeredReplacement));
        int original = StressTargets.Hammered(7);
        int replaced = StressTargets.HammeredReplacement(7);
        long calls = 0, redirected = 0, rediverted = 0;
        using var stop = new CancellationTokenSource();
        Exception? failure = null;
        var hammer = new Thread(() =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    for (int i = 0; i < 10_000; i++)
                    {
                        int r = StressTargets.Hammered(7);
                        if (r == replaced)
                        {
                            redirected++;
                        }
                        else if (r != original)
                        {
                            throw new InvalidOperationException($"Hammered returned {r}.");
                        }
                    }

                    calls += 10_000;
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        hammer.Start();

        var watch = Stopwatch.StartNew();
        int cycles = 0;
        while (watch.Elapsed < TimeSpan.FromSeconds(3) || Interlocked.Read(ref calls) < 2_000_000)
        {
            using (Detour d = Detour.Create(target, replacement))
            {
                rediverted += Detour.LastBatch.Rediverted;
                Thread.SpinWait(2_000);
            }

            Thread.SpinWait(2_000);
            cycles++;
        }

        stop.Cancel();
        hammer.Join();
        TestContext.Out.WriteLine($"{cycles} detour/undo cycles ({rediverted} diversions undone by the runtime), {calls} calls, {redirected} redirected");
        Assert.That(failure, Is.Null);
        Assert.That(StressTargets.Hammered(7), Is.EqualTo(original));
        Assert.That(redirected, Is.GreaterThan(0));
    }

    [Test]
    public void ConcurrentCreateAndDispose()
    {
        string[] names = [nameof(StressTargets.C0), nameof(StressTargets.C1), nameof(StressTargets.C2), nameof(StressTargets.C3)];
        var replacement = Method(typeof(StressTargets), nameof(StressTargets.CReplacement));
        long conflicts = 0;
        Exception? failure = null;
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            try
            {
                for (int i = 0; i < 30; i++)
                {
                    // Half the time every thread fights over C0; otherwise each has its own target.
                    string name = i % 2 == 0 ? names[0] : names[t];
                    try
                    {
                        using Detour d = Detour.Create(Method(typeof(StressTargets), name), replacement);
                        if (StressTargets.Call(name) != -1)
                        {
                            throw new InvalidOperationException($"{name} not redirected while its detour was applied.");
                        }
                    }
                    catch (InvalidOperationException e) when (e.Message.Contains("already detoured"))
                    {
                        Interlocked.Increment(ref conflicts);
                    }
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        TestContext.Out.WriteLine($"{conflicts} refused as already detoured");
        Assert.That(failure, Is.Null);
        foreach (string name in names)
        {
            Assert.That(StressTargets.Call(name), Is.EqualTo(name[1] - '0'));
        }
    }
}

internal static class StressTargets
{
    public static string Expected(int i) => "#" + (i * 2).ToString(System.Globalization.CultureInfo.InvariantCulture);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static string Format(object box, int n)
    {
        var list = new List<object> { box, n };
        GC.KeepAlive(new byte[64]);
        return "#" + ((int)list[0] + (int)list[1]).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public static string FormatReplacement(object box, int n) => "replaced";

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Hammered(int x) => (x * 31) + (x >> 2) + 1000;

    public static int HammeredReplacement(int x) => -x;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int C0(int bias) => Environment.ProcessorCount > 0 ? 0 + bias : 100;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int C1(int bias) => Environment.ProcessorCount > 0 ? 1 + bias : 100;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int C2(int bias) => Environment.ProcessorCount > 0 ? 2 + bias : 100;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int C3(int bias) => Environment.ProcessorCount > 0 ? 3 + bias : 100;

    // The parameter is there for the prologue: the unoptimized code stores it before its first call, which would
    // otherwise come within the 5 bytes a detour overwrites when the project is built in Release.
    public static int CReplacement(int bias) => -1;

    public static int Call(string name) => name switch
    {
        "C0" => C0(0),
        "C1" => C1(0),
        "C2" => C2(0),
        _ => C3(0),
    };
}
