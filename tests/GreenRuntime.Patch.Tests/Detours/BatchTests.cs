using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>
/// Detour.CreateBatch: many detours with one wait, each request refused on its own, callbacks before any call is
/// redirected, and callers on other threads hammering every target while the batch goes live and is undone.
/// </summary>
[TestFixture]
public class BatchTests
{
    private static readonly string[] Names = [nameof(BatchTargets.B0), nameof(BatchTargets.B1), nameof(BatchTargets.B2), nameof(BatchTargets.B3)];

    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void EveryDetourOfABatchIsLiveAndUndoable()
    {
        DetourOutcome[] outcomes = Detour.CreateBatch(Names.Select(n => Request(n)).ToList());
        try
        {
            Assert.That(outcomes.Select(o => o.Error), Is.All.Null);
            for (int i = 0; i < Names.Length; i++)
            {
                Assert.That(BatchTargets.Call(i, 10), Is.EqualTo(BatchTargets.Replacement(10)), $"{Names[i]} must be redirected");
                Assert.That(outcomes[i].Detour!.GetOriginal<Func<int, int>>()(10), Is.EqualTo(BatchTargets.Expected(i, 10)), $"{Names[i]}'s original");
            }

            Assert.That(Detour.LastBatch.Requested, Is.EqualTo(Names.Length));
            Assert.That(Detour.LastBatch.Created, Is.EqualTo(Names.Length));
        }
        finally
        {
            foreach (DetourOutcome outcome in outcomes)
            {
                outcome.Detour?.Dispose();
            }
        }

        for (int i = 0; i < Names.Length; i++)
        {
            Assert.That(BatchTargets.Call(i, 10), Is.EqualTo(BatchTargets.Expected(i, 10)), $"{Names[i]} must be original again");
        }
    }

    [Test]
    public void ARefusedRequestLeavesTheOthersAlone()
    {
        MethodInfo generic = Method(typeof(BatchTargets), nameof(BatchTargets.Generic));
        var ran = new List<string>();
        List<DetourRequest> requests =
        [
            Request(Names[0], d => ran.Add(Names[0])),
            new DetourRequest(generic, Method(typeof(BatchTargets), nameof(BatchTargets.Replacement))),
            Request(Names[1], d => throw new InvalidTimeZoneException("callback says no")),
            Request(Names[2], d => ran.Add(Names[2])),
            Request(Names[2]), // the same target twice in one batch
        ];
        DetourOutcome[] outcomes = Detour.CreateBatch(requests);
        try
        {
            Assert.That(outcomes[0].Detour, Is.Not.Null);
            Assert.That(outcomes[1].Error, Is.InstanceOf<NotSupportedException>());
            Assert.That(outcomes[2].Error, Is.InstanceOf<InvalidTimeZoneException>(), "a callback's exception is that request's outcome");
            Assert.That(outcomes[3].Detour, Is.Not.Null);
            Assert.That(outcomes[4].Error, Is.InstanceOf<InvalidOperationException>().With.Message.Contains("already detoured"));
            Assert.That(outcomes.Select(o => (o.Detour is null) != (o.Error is null)), Is.All.True, "exactly one of detour and error");
            Assert.That(ran, Is.EqualTo(new[] { Names[0], Names[2] }), "callbacks of the live detours ran, in order");

            Assert.That(BatchTargets.B0(4), Is.EqualTo(BatchTargets.Replacement(4)));
            Assert.That(BatchTargets.B1(4), Is.EqualTo(BatchTargets.Expected(1, 4)), "the refused target runs its original");
            Assert.That(BatchTargets.B2(4), Is.EqualTo(BatchTargets.Replacement(4)));
        }
        finally
        {
            foreach (DetourOutcome outcome in outcomes)
            {
                outcome.Detour?.Dispose();
            }
        }

        // Refused before anything was written: a later batch can detour it.
        DetourOutcome again = Detour.CreateBatch([Request(Names[1])])[0];
        using (again.Detour)
        {
            Assert.That(again.Error, Is.Null);
            Assert.That(BatchTargets.B1(4), Is.EqualTo(BatchTargets.Replacement(4)));
        }
    }

    [Test]
    public void CallbacksRunBeforeAnyCallOfTheBatchIsRedirected()
    {
        // Each callback checks that no target of the batch is redirected yet: the jumps are written together,
        // after every callback.
        var redirectedInCallback = new List<string>();
        var requests = Names.Select(n => Request(n, d =>
        {
            for (int i = 0; i < Names.Length; i++)
            {
                if (BatchTargets.Call(i, 1) == BatchTargets.Replacement(1))
                {
                    redirectedInCallback.Add(Names[i]);
                }
            }
        })).ToList();
        DetourOutcome[] outcomes = Detour.CreateBatch(requests);
        try
        {
            Assert.That(redirectedInCallback, Is.Empty);
            Assert.That(Enumerable.Range(0, Names.Length).Select(i => BatchTargets.Call(i, 1)), Is.All.EqualTo(BatchTargets.Replacement(1)));
        }
        finally
        {
            foreach (DetourOutcome outcome in outcomes)
            {
                outcome.Detour?.Dispose();
            }
        }
    }

    [Test]
    public void HammerEveryTargetWhileBatchesGoLiveAndAreUndone()
    {
        long calls = 0;
        long[] redirected = new long[Names.Length];
        Exception? failure = null;
        using var stop = new CancellationTokenSource();
        var hammers = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    for (int n = 0; n < 10_000; n++)
                    {
                        int i = n & 3;
                        int r = BatchTargets.Call(i, 7);
                        if (r == BatchTargets.Replacement(7))
                        {
                            Interlocked.Increment(ref redirected[i]);
                        }
                        else if (r != BatchTargets.Expected(i, 7))
                        {
                            throw new InvalidOperationException($"{Names[i]} returned {r}.");
                        }
                    }

                    Interlocked.Add(ref calls, 10_000);
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        })).ToList();
        hammers.ForEach(t => t.Start());

        var watch = System.Diagnostics.Stopwatch.StartNew();
        int cycles = 0;
        while (watch.Elapsed < TimeSpan.FromSeconds(3) || Interlocked.Read(ref calls) < 2_000_000)
        {
            DetourOutcome[] outcomes = Detour.CreateBatch(Names.Select(n => Request(n)).ToList());
            Thread.SpinWait(2_000);
            foreach (DetourOutcome outcome in outcomes)
            {
                Assert.That(outcome.Error, Is.Null);
                outcome.Detour!.Dispose();
            }

            Thread.SpinWait(2_000);
            cycles++;
        }

        stop.Cancel();
        hammers.ForEach(t => t.Join());
        TestContext.Out.WriteLine($"{cycles} batch/undo cycles, {calls} calls, redirected {string.Join(", ", redirected)}");
        Assert.That(failure, Is.Null);
        Assert.That(redirected, Is.All.GreaterThan(0));
        Assert.That(Enumerable.Range(0, Names.Length).Select(i => BatchTargets.Call(i, 7)), Is.EqualTo(Enumerable.Range(0, Names.Length).Select(i => BatchTargets.Expected(i, 7))));
    }

    private static DetourRequest Request(string name, Action<Detour>? beforeLive = null) =>
        new(Method(typeof(BatchTargets), name), Method(typeof(BatchTargets), nameof(BatchTargets.Replacement)), beforeLive);
}

internal static class BatchTargets
{
    public static int Expected(int i, int x) => (x * (31 + i)) + (x >> 2) + 1000;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int B0(int x) => (x * 31) + (x >> 2) + 1000;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int B1(int x) => (x * 32) + (x >> 2) + 1000;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int B2(int x) => (x * 33) + (x >> 2) + 1000;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int B3(int x) => (x * 34) + (x >> 2) + 1000;

    public static int Replacement(int x) => -x;

    public static T Generic<T>(T value) => value;

    public static int Call(int i, int x) => i switch
    {
        0 => B0(x),
        1 => B1(x),
        2 => B2(x),
        _ => B3(x),
    };
}
