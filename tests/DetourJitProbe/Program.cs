// Exit codes: 0 = every missing-assembly failure surfaced as a catchable FileNotFoundException;
// 1 = something else happened. A guard that breaks exception propagation would abort the process (134).
using System.Reflection;
using System.Runtime.CompilerServices;
using DetourJitProbe.Missing;
using GreenRuntime.Detours;

Detour.EnsureSupported();
using Detour detour = Detour.Create(
    typeof(Probe).GetMethod(nameof(Probe.Target))!,
    typeof(Probe).GetMethod(nameof(Probe.Replacement))!);
if (Probe.Target(1) != -1)
{
    Console.WriteLine("detour not applied");
    return 1;
}

int caught = 0;
var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
{
    for (int i = 0; i < 50; i++)
    {
        try
        {
            // Each call JIT-compiles a method that needs the missing assembly; the JIT fails every time.
            _ = t == 0 ? Probe.UsesMissingA() : Probe.UsesMissingB();
        }
        catch (FileNotFoundException)
        {
            Interlocked.Increment(ref caught);
        }
    }
})).ToList();
threads.ForEach(t => t.Start());
threads.ForEach(t => t.Join());
Console.WriteLine($"caught {caught} FileNotFoundException; guard refused {Probe.Refused()} compiles");
return caught == 100 ? 0 : 1;

internal static class Probe
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Target(int x) => (x * 3) + (x >> 1) + 7;

    public static int Replacement(int x) => -x;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int UsesMissingA() => new MissingType().Touch();

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int UsesMissingB() => new MissingType().Touch() + 1;

    public static long Refused() =>
        (long)typeof(Detour).Assembly.GetType("GreenRuntime.Detours.JitGuard")!
            .GetProperty("RefusedCompiles", BindingFlags.Static | BindingFlags.Public)!.GetValue(null)!;
}
