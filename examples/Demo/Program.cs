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

static void Section(string heading, Action body)
{
    Console.WriteLine($"== {heading}");
    var watch = Stopwatch.StartNew();
    body();
    Console.WriteLine($"   ({watch.Elapsed.TotalMilliseconds:F1} ms)");
    Console.WriteLine();
}
