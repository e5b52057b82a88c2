// Side-by-side benchmarks: GreenRuntime against gevent and Go on the same workloads, in the same run.
//
//   dotnet run -c Release --project bench/SideBySide            all workloads, best of 3, writes docs/BENCHMARKS.md
//   dotnet run -c Release --project bench/SideBySide -- --rounds 1 --only switch
//   dotnet run -c Release --project bench/SideBySide -- --only http --output /tmp/http.md   one part, docs/ untouched
//
// The generated section of the output is rewritten with what this run measured, so a partial run (--only) belongs
// in a scratch --output; its charts go to a charts/ folder next to that file.
//
// Each system runs each workload in its own process (so memory figures are per process), alternating
// GreenRuntime / gevent / Go for every round; the best round of each counts. gevent and Go run the anchor
// programs in ./anchors (gevent and Go are installed with apt if missing; a column is skipped with a message
// when they cannot be had). Then the throughput-vs-concurrency sweeps (echo, HTTP): every server loaded
// by the same neutral load client (LoadClient.cs) at 10, 100 and 1000 connections.
using GreenRuntime.SideBySide;

if (args is ["worker", var workload, ..])
{
    Console.WriteLine(Workloads.RunWorker(workload, args.Skip(2).ToArray()));
    return 0;
}

var rounds = 3;
string? only = null;
string? output = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i]); break;
        case "--only" when i + 1 < args.Length: only = args[++i]; break;
        case "--output" when i + 1 < args.Length: output = args[++i]; break;
        default:
            Console.Error.WriteLine($"unknown argument '{args[i]}'. Usage: [--rounds N] [--only <workload name part>] [--output <markdown file>]");
            return 2;
    }
}
if (rounds < 1) { Console.Error.WriteLine("--rounds must be at least 1"); return 2; }

var repo = Harness.FindRepositoryRoot();
var anchors = Anchors.Locate(repo);
var results = Harness.RunAll(anchors, rounds, only);
var sweeps = Harness.RunSweeps(anchors, rounds, only);
output ??= Path.Combine(repo, "docs", "BENCHMARKS.md");
// Charts go next to the markdown that links them (charts/…), so --output to a scratch file leaves docs/ alone.
Report.Write(results, sweeps, output, Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, "charts"), rounds);
return 0;
