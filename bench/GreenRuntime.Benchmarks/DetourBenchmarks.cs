using System.Reflection;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using GreenRuntime.Detours;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What a detour adds to a call: a direct call of a [NoInlining] method, the same call when the method is
/// detoured to an identical replacement (one extra jump + the replacement's entry stub), and a detoured
/// call whose replacement calls the original through <see cref="Detour.GetOriginal{TDelegate}"/>
/// (delegate + calli + trampoline). The goal: at most 5 ns added per call.
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- --filter '*DetourBenchmarks*'
/// </remarks>
[MemoryDiagnoser]
public class DetourBenchmarks
{
    private static Func<int, int>? original;
    private Detour? detoured;
    private Detour? viaOriginal;

    [GlobalSetup]
    public void Setup()
    {
        detoured = Detour.Create(M(nameof(DetouredTarget)), M(nameof(Replacement)));
        viaOriginal = Detour.Create(M(nameof(ViaOriginalTarget)), M(nameof(ReplacementCallingOriginal)));
        original = viaOriginal.GetOriginal<Func<int, int>>();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        detoured?.Dispose();
        viaOriginal?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public int Direct() => DirectTarget(42);

    [Benchmark]
    public int Detoured() => DetouredTarget(42);

    [Benchmark]
    public int DetouredCallingOriginal() => ViaOriginalTarget(42);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int DirectTarget(int x) => ((x * 3) ^ (x >> 2)) + 7;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int DetouredTarget(int x) => ((x * 5) ^ (x >> 2)) + 7;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int ViaOriginalTarget(int x) => ((x * 7) ^ (x >> 2)) + 7;

    public static int Replacement(int x) => ((x * 3) ^ (x >> 2)) + 7;

    public static int ReplacementCallingOriginal(int x) => original!(x);

    private static MethodInfo M(string name) => typeof(DetourBenchmarks).GetMethod(name)!;
}
