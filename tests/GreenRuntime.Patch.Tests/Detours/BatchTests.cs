using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    /// <summary>
    /// Callers the OS keeps off the CPU for long stretches (SCHED_IDLE, sharing one CPU with a thread that spins) are
    /// now and then preempted inside a body's first bytes, and stay off the CPU past the 25 ms minimum wait. The jump
    /// must not be written under them: they would resume inside its displacement (on the engine without the wait for
    /// preempted threads this crashed the test host with an access violation).
    /// </summary>
    [Test]
    public void ACallerKeptOffTheCpuInsideABodyIsNotCaughtByItsJump()
    {
        int cpu = Starving.SharedCpu();
        long calls = 0;
        Exception? failure = null;
        using var stop = new CancellationTokenSource();
        var hog = Starving.Hog(cpu, stop.Token);
        // Several callers: while one runs, the others wait off the CPU wherever the last preemption left them.
        var callers = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
        {
            try
            {
                Starving.PinToCpu(cpu);
                Starving.LowestPriority();
                while (!stop.IsCancellationRequested)
                {
                    for (int n = 0; n < 1_000; n++)
                    {
                        int i = n & 3;
                        int r = BatchTargets.Call(i, 7);
                        if (r != BatchTargets.Replacement(7) && r != BatchTargets.Expected(i, 7))
                        {
                            throw new InvalidOperationException($"{Names[i]} returned {r}.");
                        }
                    }

                    Interlocked.Add(ref calls, 1_000);
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true }).ToList();
        hog.Start();
        callers.ForEach(t => t.Start());
        try
        {
            for (int cycle = 0; cycle < 40 && failure is null; cycle++)
            {
                DetourOutcome[] outcomes = Detour.CreateBatch(Names.Select(n => Request(n)).ToList());
                foreach (DetourOutcome outcome in outcomes)
                {
                    Assert.That(outcome.Error, Is.Null);
                    outcome.Detour!.Dispose();
                }
            }
        }
        finally
        {
            stop.Cancel();
            Assert.That(callers.All(t => t.Join(TimeSpan.FromSeconds(30))), Is.True, "the starved callers end");
            hog.Join();
        }

        TestContext.Out.WriteLine($"{calls} calls by the starved callers");
        Assert.That(failure, Is.Null);
    }

    /// <summary>
    /// The wait for preempted threads on its own: a thread kept off the CPU (SCHED_IDLE beside a spinning thread on
    /// its CPU) is in the snapshot while it waits to run, and the wait returns only once it has run again.
    /// </summary>
    [Test]
    public void TheWaitForPreemptedThreadsEndsOnlyOnceTheyRanAgain()
    {
        int cpu = Starving.SharedCpu();
        long progress = 0;
        int starvedTid = 0;
        using var stop = new CancellationTokenSource();
        var hog = Starving.Hog(cpu, stop.Token);
        var starved = new Thread(() =>
        {
            Starving.PinToCpu(cpu);
            Starving.LowestPriority();
            Volatile.Write(ref starvedTid, Starving.ThreadId());
            while (!stop.IsCancellationRequested)
            {
                Interlocked.Increment(ref progress);
            }
        }) { IsBackground = true };
        hog.Start();
        starved.Start();
        try
        {
            int seen = 0;
            var watch = System.Diagnostics.Stopwatch.StartNew();
            while (seen < 5 && watch.Elapsed < TimeSpan.FromSeconds(20))
            {
                int tid = Volatile.Read(ref starvedTid);
                long before = Interlocked.Read(ref progress);
                List<PreemptedThreads.Runnable> runnable = PreemptedThreads.Snapshot();
                Thread.Sleep(2);
                if (tid == 0 || Interlocked.Read(ref progress) != before || !runnable.Exists(r => r.Tid == tid))
                {
                    continue; // it was on the CPU: look again
                }

                int left = PreemptedThreads.WaitUntilRunAgain(runnable, _ => Thread.Sleep(1));
                Assert.That(left, Is.Zero, "every preempted thread ran again within the wait's limit");
                Assert.That(Interlocked.Read(ref progress), Is.GreaterThan(before), "the wait ended only once the starved thread had run");
                seen++;
            }

            Assert.That(seen, Is.GreaterThan(0), "the starved thread was seen preempted");
        }
        finally
        {
            stop.Cancel();
            starved.Join();
            hog.Join();
        }
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

/// <summary>The scheduling calls of the starved-caller test (Linux).</summary>
internal static unsafe class Starving
{
    [DllImport("libc", SetLastError = true)]
    private static extern int sched_setaffinity(int pid, nint size, ulong* mask);

    [DllImport("libc", SetLastError = true)]
    private static extern int sched_setscheduler(int pid, int policy, int* param);

    [DllImport("libc")]
    private static extern int gettid();

    /// <summary>The CPU the starved threads share with <see cref="Hog"/>: the last one; the test is ignored on a machine
    /// with one, where nothing would be left to patch or wait from.</summary>
    public static int SharedCpu()
    {
        if (Environment.ProcessorCount < 2)
        {
            Assert.Ignore("Needs two CPUs: one shared by the starved threads and a spinning thread, the other for the test.");
        }

        return Environment.ProcessorCount - 1;
    }

    /// <summary>A thread on <paramref name="cpu"/> that wakes every 60 ms and then spins until the next: waking, it
    /// preempts a SCHED_IDLE thread of that CPU at once, wherever it is, and keeps it off the CPU for longer than the
    /// detour engine's minimum wait. Not started.</summary>
    public static Thread Hog(int cpu, CancellationToken stop) => new(() =>
    {
        PinToCpu(cpu);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!stop.IsCancellationRequested)
        {
            Thread.Sleep(1);
            long until = clock.ElapsedMilliseconds + 60;
            while (clock.ElapsedMilliseconds < until)
            {
                Thread.SpinWait(100);
            }
        }
    }) { IsBackground = true };

    /// <summary>The calling thread's kernel id.</summary>
    public static int ThreadId() => gettid();

    /// <summary>Pins the calling thread to <paramref name="cpu"/>.</summary>
    public static void PinToCpu(int cpu)
    {
        ulong* mask = stackalloc ulong[16];
        mask[cpu / 64] = 1UL << (cpu % 64);
        if (sched_setaffinity(0, 16 * sizeof(ulong), mask) != 0)
        {
            throw new InvalidOperationException($"sched_setaffinity failed: errno {Marshal.GetLastPInvokeError()}.");
        }
    }

    /// <summary>Puts the calling thread in SCHED_IDLE: it runs only when nothing else on its CPU wants to.</summary>
    public static void LowestPriority()
    {
        int param = 0;
        if (sched_setscheduler(gettid(), SchedIdle, &param) != 0)
        {
            throw new InvalidOperationException($"sched_setscheduler failed: errno {Marshal.GetLastPInvokeError()}.");
        }
    }

    private const int SchedIdle = 5;
}
