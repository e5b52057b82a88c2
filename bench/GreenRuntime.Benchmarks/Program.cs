// Micro-benchmarks.
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- --filter '*'   BenchmarkDotNet, all classes
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick          best-of-3 figures, one JSON line
//                                                                                   per workload, shaped like the
//                                                                                   gevent anchors in bench/SideBySide/anchors
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-prims    the same for Event/Queue/Channel
//                                                                                   ping-pong and Pool.Map (PrimitiveBenchmarks.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-patch    off-greenlet cost of patched methods
//                                                                                   (PatchOverhead.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-hubs     items through one queue across the
//                                                                                   hubs of a HubGroup (HubGroupThroughput.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-file     a cached 1 KB file read on a greenlet ([calls] [directory], e.g. /dev/shm)
//                                                                                   vs the plain system call (FileReadCost.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-disk-write [directory] [MiB]   small and large
//                                                                                   file writes on greenlets, inline and
//                                                                                   through the pool (FileWriteCost.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-gc [N ...]   GC pauses with N suspended stackful
//                                                                                   greenlets (default 0 and 1000;
//                                                                                   GcPauseWithParkedCarriers.cs)
//   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- patch-startup [runs]
//                                                                                   Patch.All() cold in fresh processes,
//                                                                                   median of 10 (PatchStartup.cs)
using BenchmarkDotNet.Running;
using GreenRuntime.Benchmarks;

if (PatchStartup.IsChild(args))
{
    PatchStartup.Child();
    return;
}
if (args is ["patch-startup", ..])
{
    PatchStartup.Run(args.Length > 1 ? int.Parse(args[1]) : 10);
    return;
}
if (args is ["quick-file", ..])
{
    FileReadCost.Run(args.Length > 1 ? int.Parse(args[1]) : 20_000, args.Length > 2 ? args[2] : null);
    return;
}
if (args is ["quick-disk-write", ..])
{
    FileWriteCost.Run(args.Length > 1 ? args[1] : null, args.Length > 2 ? int.Parse(args[2]) : 256);
    return;
}
if (args is ["quick-gc", ..])
{
    GcPauseWithParkedCarriers.Run(args.Length > 1 ? args[1..].Select(int.Parse).ToArray() : [0, 1000]);
    return;
}
if (args is ["quick-prims", ..])
{
    PrimitiveWorkloads.QuickRun(args.Length > 1 ? int.Parse(args[1]) : 1_000_000);
    return;
}
if (args is ["quick-patch", ..])
{
    int calls = args.Length > 1 ? int.Parse(args[1]) : 10_000_000;
    PatchOverhead.Run(calls);
    ReflectionPatchOverhead.Run(calls / 5);
    return;
}
if (args is ["quick-hubs", ..])
{
    HubGroupThroughput.Run(args.Length > 1 ? int.Parse(args[1]) : 1_000_000);
    return;
}
if (args is ["quick", ..])
{
    QuickRun.Run(args.Length > 1 ? int.Parse(args[1]) : 1_000_000);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);

public partial class Program;
