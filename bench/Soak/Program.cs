// The soak: every workload of GreenRuntime at once, for a bounded time, under Patch.All(), with seeded random
// faults (kills at random points, timeouts, resets, slow peers, malformed HTTP), checking that nothing is lost.
//
//   dotnet run --project bench/Soak -- [--seconds 60] [--seed N] [--warmup S] [--hold-quiet S]
//
// Debug (the default configuration) keeps the runtime's invariant assertions on, among them "the baton is never
// held by two carriers"; -c Release runs the optimised build. Exit code 0 only when every invariant held; a
// failure prints the seed, and --seed N replays the same random mix (the interleaving still varies with timing).
using GreenRuntime.Soak;

int seconds = 60, seed = Environment.TickCount & 0x7fffffff;
int? warmup = null;
int holdQuiet = 0;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--seconds" when i + 1 < args.Length: seconds = int.Parse(args[++i]); break;
        case "--seed" when i + 1 < args.Length: seed = int.Parse(args[++i]); break;
        case "--warmup" when i + 1 < args.Length: warmup = int.Parse(args[++i]); break;
        case "--hold-quiet" when i + 1 < args.Length: holdQuiet = int.Parse(args[++i]); break;
        default:
            Console.Error.WriteLine("usage: Soak [--seconds N (default 60)] [--seed N] [--warmup S (default: a quarter of the run, 5 to 60 s)] [--hold-quiet S (stay quiet S s after each quiet snapshot, to take a heap dump)]");
            return 2;
    }
}
if (seconds < 10)
{
    Console.Error.WriteLine("--seconds must be at least 10: the soak needs a warm-up and a measured phase.");
    return 2;
}
return new SoakRun(seconds, seed, warmup ?? Math.Clamp(seconds / 4, 5, 60), holdQuiet).Run();
