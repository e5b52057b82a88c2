// The seed's examples, translated to C#: what greenlets, generators, coroutines and gevent-style
// spawn/joinall look like with GreenRuntime. Run with: dotnet run --project examples/Demo
using System.Diagnostics;
using GreenRuntime;

Section("1. greenlet switch: prints 1 3 2 4, then the main program continues", () =>
{
    Greenlet? gr1 = null, gr2 = null;
    gr1 = new Greenlet(() =>
    {
        Console.Write("1 ");
        gr2!.Switch();
        Console.Write("2 ");
        gr2!.Switch();
    });
    gr2 = new Greenlet(() =>
    {
        Console.Write("3 ");
        gr1.Switch();
        Console.Write("4 ");
    });
    gr1.Switch();
    Console.WriteLine("-> main continues");
    gr1.Kill(); // gr1 is still suspended in its second Switch: finish it like gevent's GC would
});

Section("2. generators with nested delegation (C# iterators): prints 1 3 4 2", () =>
{
    static IEnumerable<int> Inner()
    {
        yield return 3;
        yield return 4;
    }
    static IEnumerable<int> Outer()
    {
        yield return 1;
        foreach (var x in Inner()) yield return x; // Python's `yield from`
        yield return 2;
    }
    Console.WriteLine(string.Join(" ", Outer()));
});

Section("3a. three coroutines sleeping 3 s, 2 s, 2 s with async/await: about 3 s", () =>
{
    static async Task Coroutine(string name, int seconds)
    {
        Console.WriteLine($"  {name} starts, sleeps {seconds} s");
        await Task.Delay(TimeSpan.FromSeconds(seconds));
        Console.WriteLine($"  {name} done");
    }
    Task.WaitAll(Coroutine("a", 3), Coroutine("b", 2), Coroutine("c", 2));
});

Section("3b. the same three with greenlets and Green.Sleep: about 3 s on one logical thread", () =>
{
    Greenlet Worker(string name, int seconds) => Green.Spawn(() =>
    {
        Console.WriteLine($"  {name} starts, sleeps {seconds} s");
        Green.Sleep(TimeSpan.FromSeconds(seconds));
        Console.WriteLine($"  {name} done");
    }, name);
    Green.JoinAll([Worker("a", 3), Worker("b", 2), Worker("c", 2)]);
});

Section("4. gevent spawn/joinall, Sleep(0) between prints: f1 1, f2 6, f1 2, f2 7, ...", () =>
{
    void Count(string name, int from)
    {
        for (int i = from; i < from + 5; i++)
        {
            Console.Write($"{name} {i}, ");
            Green.Sleep(0);
        }
    }
    Green.JoinAll([Green.Spawn(() => Count("f1", 1)), Green.Spawn(() => Count("f2", 6))]);
    Console.WriteLine();
});

Section("5. the blocking monitor catches an unpatched Thread.Sleep that stops every greenlet", () =>
{
    HubBlockedReport? report = null;
    EventHandler<HubBlockedReport> onBlocked = (_, r) => report = r; // raised on the monitor thread
    Hub.Current.Blocked += onBlocked;
    try
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        static void LoadLegacyConfig() => Thread.Sleep(400); // a real OS sleep: the whole hub stops

        var longestGap = TimeSpan.Zero;
        var ticker = Green.Spawn(() =>
        {
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < 20; i++)
            {
                var before = watch.Elapsed;
                Green.Sleep(10);
                if (watch.Elapsed - before > longestGap) longestGap = watch.Elapsed - before;
            }
        }, "ticker");
        var legacy = Green.Spawn(LoadLegacyConfig, "legacy-config");
        Green.JoinAll([ticker, legacy]);
        for (int i = 0; i < 500 && report == null; i++) Green.Sleep(10); // the report arrives after its stack capture
        Console.WriteLine($"  ticker asked for 10 ms sleeps; its longest one took {longestGap.TotalMilliseconds:F0} ms"
            + (report?.CaptureDuration > TimeSpan.Zero ? $" (the 400 ms sleep, stretched by the {report.CaptureDuration.TotalMilliseconds:F0} ms stack capture, which pauses the process)" : ""));
        if (report == null)
        {
            Console.WriteLine("  (no report: is MaxBlockingTime null?)");
            return;
        }
        Console.WriteLine($"  monitor: {report.Holder} held the baton for {report.BlockedFor.TotalMilliseconds:F0}+ ms");
        Console.WriteLine(report.StackTrace is { } stack
            ? "  where it was blocked (captured while it still slept):\n" + string.Join("\n",
                  stack.Split('\n').Where(l => !l.Contains("GreenRuntime.") && !l.Contains("StartCallback") && !l.Contains("[native code") && !l.Contains("[runtime stub")).Take(2))
            : $"  no stack: {report.StackUnavailableReason}");
    }
    finally
    {
        Hub.Current.Blocked -= onBlocked;
    }
});

Section("6. Patch.All(): the coroutines of 3b written with plain Thread.Sleep, unmodified, about 3 s", () =>
{
    var report = Patch.All();
    Console.WriteLine($"  Patch.All(): {report.Patched.Count} methods patched, {report.Refused.Count} refused (see Patch.Applied and docs/patching.md)");
    static void LegacyWorker(string name, int seconds) // knows nothing about greenlets
    {
        Console.WriteLine($"  {name} starts, Thread.Sleep({seconds * 1000})");
        Thread.Sleep(seconds * 1000);
        Console.WriteLine($"  {name} done");
    }
    var watch = Stopwatch.StartNew();
    Green.JoinAll([Green.Spawn(() => LegacyWorker("a", 3)), Green.Spawn(() => LegacyWorker("b", 2)), Green.Spawn(() => LegacyWorker("c", 2))]);
    Console.WriteLine($"  the three sleepers took {watch.Elapsed.TotalSeconds:F2} s (the section's time below includes patching)");
});

static void Section(string heading, Action body)
{
    Console.WriteLine($"== {heading}");
    var watch = Stopwatch.StartNew();
    body();
    Console.WriteLine($"   ({watch.Elapsed.TotalMilliseconds:F1} ms)");
    Console.WriteLine();
}
