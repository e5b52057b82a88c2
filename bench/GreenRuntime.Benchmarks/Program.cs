// BenchmarkDotNet micro-benchmarks. Run: dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- --filter '*'
using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);

public partial class Program;
