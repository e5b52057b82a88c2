using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A managed callback that native code calls (libc's qsort with a comparer that blocks) is no cancellation point: a kill,
/// timeout or thread interrupt raised there would unwind through qsort's frames, and the runtime ends the process. They
/// stay pending and are raised at the first blocking point after the P/Invoke returns; the sort completes.
/// </summary>
public unsafe class NativeCallbackTests : PatchedHubTest
{
    private const int Elements = 3000;

    [DllImport("libc", EntryPoint = "qsort")]
    private static extern void QSort(int* items, nuint count, nuint size, nint comparer);

    private delegate int Comparer(int* a, int* b);

    /// <summary>Comparisons so far, and the one that blocks every <see cref="BlockEvery"/>: set by each test.</summary>
    [ThreadStatic] private static int t_comparisons;

    private const int BlockEvery = 50;

    private static Action s_block = () => { };

    private static int[] Shuffled() => Enumerable.Range(0, Elements).Select(i => (int)((i * 7919L) % Elements)).ToArray();

    private static int Compare(int* a, int* b)
    {
        if (++t_comparisons % BlockEvery == 0) s_block();
        return (*a).CompareTo(*b);
    }

    [UnmanagedCallersOnly]
    private static int CompareUnmanaged(int* a, int* b) => Compare(a, b);

    private static readonly Comparer s_comparer = Compare;

    private static nint ComparerPointer(bool unmanagedCallersOnly) =>
        unmanagedCallersOnly ? (nint)(delegate* unmanaged<int*, int*, int>)&CompareUnmanaged : Marshal.GetFunctionPointerForDelegate(s_comparer);

    /// <summary>Sorts <paramref name="items"/> with qsort and the blocking comparer; returns how many comparisons ran.</summary>
    private static int Sort(int[] items, bool unmanagedCallersOnly)
    {
        t_comparisons = 0;
        fixed (int* p = items) QSort(p, (nuint)items.Length, sizeof(int), ComparerPointer(unmanagedCallersOnly));
        return t_comparisons;
    }

    private static void AssertSorted(int[] items) => Assert.That(items, Is.EqualTo(Enumerable.Range(0, Elements).ToArray()), "the sort completed");

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (bool uco in new[] { false, true })
        {
            string via = uco ? "UnmanagedCallersOnly" : "delegate";
            yield return new TestCaseData((Action)(() => Thread.Sleep(1)), uco).SetArgDisplayNames("Thread.Sleep", via);
            yield return new TestCaseData((Action)(() => Green.Sleep(TimeSpan.FromMilliseconds(1))), uco).SetArgDisplayNames("Green.Sleep", via);
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void AKillDuringTheSortIsRaisedAfterTheNativeCallReturns(Action block, bool unmanagedCallersOnly)
    {
        var items = Shuffled();
        var entered = new Event();
        s_block = () =>
        {
            entered.Set();
            block();
        };
        bool returned = false, sleptThrough = false;
        var sorter = Green.Spawn(() =>
        {
            Sort(items, unmanagedCallersOnly);
            returned = true;
            Green.Sleep(TimeSpan.FromSeconds(30)); // the first blocking point after the P/Invoke: the kill is raised here
            sleptThrough = true;
        });
        entered.Wait();
        sorter.Kill(block: false);
        Assert.That(Green.JoinAll([sorter], TimeSpan.FromSeconds(60)), Has.Count.EqualTo(1));
        Assert.That((sorter.Dead, returned, sleptThrough, sorter.Exception), Is.EqualTo((true, true, false, (Exception?)null)), "killed after qsort returned");
        AssertSorted(items);
    }

    [TestCaseSource(nameof(Cases))]
    public void ATimeoutDuringTheSortIsRaisedAfterTheNativeCallReturns(Action block, bool unmanagedCallersOnly)
    {
        var items = Shuffled();
        s_block = block;
        int comparisons = 0;
        bool returned = false;
        var sorter = Green.Spawn(() =>
        {
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            try
            {
                comparisons = Sort(items, unmanagedCallersOnly); // the timeout expires in here: the sort blocks for longer
                returned = true;
                Thread.Sleep(TimeSpan.FromSeconds(30));
                return "slept";
            }
            catch (GreenTimeoutException e) when (e.Scope == timeout)
            {
                return "timed out";
            }
        });
        Assert.That(sorter.Get(TimeSpan.FromSeconds(60)), Is.EqualTo("timed out"));
        Assert.That(returned, Is.True, "raised after qsort returned");
        Assert.That(comparisons, Is.GreaterThan(Elements), "every comparison ran");
        AssertSorted(items);
    }

    [Test]
    public void AThreadInterruptDuringTheSortWaitsForTheNativeCallToReturn()
    {
        var items = Shuffled();
        var entered = new Event();
        s_block = () =>
        {
            entered.Set();
            Thread.Sleep(TimeSpan.FromMilliseconds(2));
        };
        Thread? target = null;
        bool returned = false;
        var sorter = Green.Spawn(() =>
        {
            target = Thread.CurrentThread;
            Sort(items, unmanagedCallersOnly: false);
            returned = true;
            Thread.Sleep(TimeSpan.FromSeconds(30));
        });
        entered.Wait();
        target!.Interrupt();
        Assert.That(Green.JoinAll([sorter], TimeSpan.FromSeconds(60)), Has.Count.EqualTo(1));
        Assert.That((returned, sorter.Exception?.GetType()), Is.EqualTo((true, typeof(ThreadInterruptedException))));
        AssertSorted(items);
    }

    [Test]
    public void ParkingInsideTheCallbackStillLetsOtherGreenletsRun()
    {
        var items = Shuffled();
        int ticks = 0;
        s_block = () => Thread.Sleep(1);
        var ticker = Green.Spawn(() =>
        {
            while (true)
            {
                ticks++;
                Green.Sleep(TimeSpan.FromMilliseconds(1));
            }
        });
        var sorter = Green.Spawn(() => Sort(items, unmanagedCallersOnly: false));
        sorter.Get(TimeSpan.FromSeconds(60));
        ticker.Kill();
        Assert.That(ticks, Is.GreaterThan(1), "the sorter parked inside its comparer");
        AssertSorted(items);
    }

    /// <summary>The guard: outside native callbacks a kill still ends a blocking call at once, and is raised at once at the
    /// next blocking point of a greenlet that was running.</summary>
    [Test]
    public void OutsideACallbackAKillIsRaisedAtTheBlockingPointItMeets()
    {
        bool woke = false;
        var sleeper = Green.Spawn(() =>
        {
            Thread.Sleep(TimeSpan.FromSeconds(30));
            woke = true;
        });
        Green.Sleep(TimeSpan.FromMilliseconds(20));
        var started = DateTime.UtcNow;
        sleeper.Kill();
        Assert.That((sleeper.Dead, woke), Is.EqualTo((true, false)));
        Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(10)));

        var items = Shuffled();
        s_block = () => { };
        bool sorted = false, passedTheYield = false;
        Greenlet? runner = null;
        runner = Green.Spawn(() =>
        {
            Sort(items, unmanagedCallersOnly: true);
            sorted = true;
            Green.Spawn(() => runner!.Kill(block: false));
            Green.Sleep(TimeSpan.Zero); // the killer runs meanwhile: this blocking point raises the kill
            passedTheYield = true;
        });
        Green.JoinAll([runner], TimeSpan.FromSeconds(10));
        Assert.That((runner.Dead, sorted, passedTheYield), Is.EqualTo((true, true, false)));
    }

    /// <summary>What the runtime itself calls from its own native code, inside a QCall, is not a foreign callback: a static
    /// constructor and an assembly-resolve handler keep their cancellation points.</summary>
    [Test]
    public void TheRuntimesOwnCallsIntoManagedCodeAreNotForeignCallbacks()
    {
        Assert.That(ForeignCalls.Usable, Is.True, "the layout check passed on this runtime");
        Assert.That(ForeignCalls.Inside(), Is.False);
        bool? inQSort = null;
        s_block = () => inQSort ??= ForeignCalls.Inside();
        Sort(Shuffled(), unmanagedCallersOnly: false);
        Assert.That(inQSort, Is.True);
        RuntimeHelpers.RunClassConstructor(typeof(RunByTheRuntime).TypeHandle);
        Assert.That(RunByTheRuntime.Inside, Is.False);
        bool? inResolve = null;
        Func<AssemblyLoadContext, AssemblyName, Assembly?> resolving = (_, _) =>
        {
            inResolve = ForeignCalls.Inside();
            return null;
        };
        AssemblyLoadContext.Default.Resolving += resolving;
        try
        {
            Assert.Throws<FileNotFoundException>(() => Assembly.Load("GreenRuntime.NoSuchAssembly"));
        }
        finally
        {
            AssemblyLoadContext.Default.Resolving -= resolving;
        }
        Assert.That(inResolve, Is.False);
    }

    private static class RunByTheRuntime
    {
        public static readonly bool Inside = ForeignCalls.Inside();
    }
}
