using System.Collections.Concurrent;
using System.Diagnostics;
using GreenRuntime.Soak.Workloads;

namespace GreenRuntime.Soak;

/// <summary>
/// Runs every workload at once on one hub, prints a progress line every 5 s, pauses the load twice — after the
/// warm-up (the baseline) and at the end — to check the invariants that hold only when nothing is in flight,
/// then stops the servers and checks that the carriers come back. See <c>Program.cs</c> for the command.
/// </summary>
/// <remarks>
/// Invariants: the ledger balances (no greenlet lost, none ended twice, no failure its faults cannot explain);
/// every workload's own checks hold (bytes intact, counts back to their start); open file descriptors, carriers
/// held by the hub, the settled managed heap and the RSS at the end are back to the baseline (heap and RSS
/// within +10 %); no carrier is held once the servers stop and idle carriers retire; the blocking monitor reports
/// no stall. Invariants are about correctness, never speed: a slow machine only runs fewer rounds.
/// </remarks>
internal sealed class SoakRun(int seconds, int seed, int warmup, int holdQuiet)
{
    private static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan QuiesceLimit = TimeSpan.FromSeconds(120);
    private const double GrowthLimit = 0.10;

    /// <summary>Heap growth below this is not reported even when above +10 %: the idle heap is only 5–8 MiB, and
    /// bounded caches that fill at random moments move it between two idle moments. The largest is the runtime's
    /// I/O buffer pool (GreenRuntime.LowLevel.IoBuffers: up to 4 arrays in each power-of-two size class up to 1 MiB, so up to
    /// about 8 MiB retained); the rest (ArrayPool's per-core partitions, reflection caches) is about 1 MiB. Seen:
    /// 4.69 → 7.54 MiB in a 60 s run whose warm-up baseline caught the pool nearly empty. A leak grows past it in a
    /// longer run (--seconds 600), and the RSS check stays at +10 %.</summary>
    private const long HeapNoise = 9 * 1024 * 1024;

    private readonly ConcurrentQueue<HubBlockedReport> _stalls = new();
    private SoakContext _context = null!;
    private SoakLog _log = null!;
    private List<Workload> _workloads = [];
    private List<Greenlet> _drivers = [];
    private readonly Stopwatch _clock = new();

    public int Run()
    {
#if DEBUG
        const string build = "Debug (runtime assertions on)";
#else
        const string build = "Release";
#endif
        Console.WriteLine($"soak: seed {seed}, {seconds} s of load (warm-up {warmup} s), {build}, {Environment.ProcessorCount} CPUs, pid {Environment.ProcessId}");
        var patched = Patch.All();
        Console.WriteLine($"soak: Patch.All() patched {patched.Patched.Count} methods, refused {patched.Refused.Count}");
        var scratch = Directory.CreateTempSubdirectory("greenruntime-soak-").FullName;
        try
        {
            _context = new SoakContext(seed, scratch);
            _log = new SoakLog(_context.Ledger);
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromSeconds(1), LoggerFactory = _log });
            hub.Blocked += (_, report) =>
            {
                _stalls.Enqueue(report);
                Console.WriteLine($"STALL: {report}");
            };
            return Soak(hub, scratch);
        }
        finally
        {
            try { Directory.Delete(scratch, recursive: true); } catch (IOException) { }
        }
    }

    private int Soak(Hub hub, string scratch)
    {
        _context.BigFile = FileWorkload.WriteBigFile(scratch);
        _workloads = [new EchoWorkload(_context), new HttpWorkload(_context), new PrimitiveWorkload(_context), new FileWorkload(_context), new StacklessWorkload(_context)];
        foreach (var w in _workloads) w.Start();
        var ledger = _context.Ledger;
        var control = _context.Control;
        control.Resume.Set();
        _drivers = _workloads.Select(w => Green.Spawn(w.Drive, $"driver.{w.Name}")).ToList();
        foreach (var driver in _drivers)
            driver.LinkException(g => ledger.Violate($"{g} died: {g.Exception}"));

        _clock.Start();
        Snapshot? baseline = null;
        var load = TimeSpan.Zero; // time under load, excluding the pauses
        var lastTick = _clock.Elapsed;
        while (load < TimeSpan.FromSeconds(seconds))
        {
            var step = TimeSpan.FromSeconds(seconds) - load;
            Green.Sleep(step < ProgressEvery ? step : ProgressEvery);
            load += _clock.Elapsed - lastTick;
            PrintProgress(load, hub);
            if (!ledger.Balanced) ledger.Violate($"the ledger does not balance: {ledger.Spawned} spawned, {ledger.Succeeded} + {ledger.Failed} + {ledger.Killed} ended, {ledger.Alive} alive.");
            if (baseline == null && load >= TimeSpan.FromSeconds(warmup))
                baseline = Quiesce(hub, "baseline after warm-up");
            lastTick = _clock.Elapsed;
        }
        var final = Quiesce(hub, "end of load", resume: false);
        baseline ??= final;
        CompareQuiet(baseline, final);

        // Stop: the drivers, still parked at their gate, leave it; servers stop; then nothing of ours holds a carrier.
        control.Stopping = true;
        control.Resume.Set();
        if (Green.JoinAll(_drivers, TimeSpan.FromSeconds(60)).Count != _drivers.Count)
            ledger.Violate("a workload driver did not stop within 60 s.");
        foreach (var w in _workloads) w.Stop();
        CheckNothingHeld(hub);

        Console.WriteLine();
        foreach (var line in ledger.Summary()) Console.WriteLine("  " + line);
        Console.WriteLine($"  total: {ledger.Spawned} spawned = {ledger.Succeeded} success + {ledger.Failed} failure + {ledger.Killed} killed + {ledger.Alive} alive");
        Console.WriteLine($"  errors logged (the injected faults'): {_log.Summary()}");
        foreach (var stall in _stalls) ledger.Violate($"the blocking monitor reported a hub stall: {stall}");
        if (ledger.ViolationCount == 0)
        {
            Console.WriteLine($"soak: PASSED (seed {seed}, {seconds} s): every invariant held.");
            return 0;
        }
        Console.WriteLine($"soak: FAILED (seed {seed}): {ledger.ViolationCount} violation(s); replay with --seed {seed}:");
        foreach (var v in ledger.Violations.Take(50)) Console.WriteLine("  - " + v);
        return 1;
    }

    private void PrintProgress(TimeSpan load, Hub hub)
    {
        var ledger = _context.Ledger;
        var carriers = hub.GetRunInfo().Carriers;
        Console.WriteLine($"[{load.TotalSeconds,4:0}s] greenlets {ledger.Spawned} spawned, {ledger.Alive} alive, " +
                          $"{ledger.Succeeded}/{ledger.Failed}/{ledger.Killed} ok/failed/killed | " +
                          string.Join(" | ", _workloads.Select(w => w.Progress())) +
                          $" | fds {Probes.FileDescriptors()}, heap {GC.GetTotalMemory(false) / 1048576.0:0.0} MiB, RSS {Probes.Rss() / 1048576.0:0} MiB, " +
                          $"carriers {carriers.Threads} ({carriers.HeldByThisHub} held) | violations {ledger.ViolationCount}, stalls {_stalls.Count}");
    }

    /// <summary>Pauses the load, waits until no workload greenlet is in flight, runs every quiet check and takes a
    /// snapshot of the process's resources, then resumes (unless this is the end).</summary>
    private Snapshot Quiesce(Hub hub, string what, bool resume = true)
    {
        var ledger = _context.Ledger;
        var control = _context.Control;
        control.Paused = true;
        control.Resume.Clear();
        var started = _clock.Elapsed;
        while ((control.ParkedDrivers < _drivers.Count(d => !d.Dead) || ledger.Alive > 0) && _clock.Elapsed - started < QuiesceLimit)
            Green.Sleep(50);
        if (ledger.Alive > 0)
        {
            ledger.Violate($"{ledger.Alive} greenlet(s) still alive {QuiesceLimit.TotalSeconds} s after the load paused (lost wakes?): " +
                           string.Join(", ", ledger.AliveGreenlets.Take(10).Select(g => $"{g} waiting on {g.WaitReason}")));
            Console.WriteLine(hub.FormatRunInfo());
        }
        Green.Sleep(200); // stackless continuations of killed greenlets and socket closes settle
        foreach (var w in _workloads) w.CheckQuiet();
        // Memory is compared between two idle moments: every thread keeps its own cache of ArrayPool.Shared arrays
        // (BCL code such as Stream.CopyTo rents on whichever carrier runs it), bounded by the number of carriers and
        // released when they retire. Waiting for the retirement also checks that idle carriers do retire.
        WaitForIdleCarriersToRetire(hub);
        var snapshot = Probes.Take(hub);
        Console.WriteLine($"[quiet] {what} (paused {(_clock.Elapsed - started).TotalSeconds:0.0} s): {snapshot}");
        if (holdQuiet > 0) Green.Sleep(TimeSpan.FromSeconds(holdQuiet)); // time for: dotnet-gcdump collect -p PID
        if (resume)
        {
            control.Paused = false;
            control.Resume.Set();
        }
        return snapshot;
    }

    /// <summary>At the end of the load, paused as at the baseline: descriptors, held carriers and memory are back.</summary>
    private void CompareQuiet(Snapshot baseline, Snapshot final)
    {
        var ledger = _context.Ledger;
        // Loaded assemblies are not counted: one first used during the load keeps its file open for good.
        var targets = final.DescriptorTargets;
        int fds = final.NonAssemblyDescriptors;
        // A descriptor closed by a finalizer or a lingering close may need a moment: re-count for up to 10 s.
        for (var until = _clock.Elapsed + TimeSpan.FromSeconds(10); fds != baseline.NonAssemblyDescriptors && _clock.Elapsed < until;)
        {
            Green.Sleep(250);
            Probes.SettledHeap();
            targets = Probes.DescriptorTargets();
            fds = targets.Count(t => !Probes.IsAssembly(t));
        }
        if (fds != baseline.NonAssemblyDescriptors)
            ledger.Violate($"open file descriptors (assemblies aside): {fds} at the end, {baseline.NonAssemblyDescriptors} at the baseline; added: {Probes.Added(baseline.DescriptorTargets, targets)}.");
        if (final.CarriersHeld != baseline.CarriersHeld)
            ledger.Violate($"carriers held by the hub when quiet: {final.CarriersHeld} at the end, {baseline.CarriersHeld} at the baseline.");
        if (final.ManagedHeap > Math.Max(baseline.ManagedHeap * (1 + GrowthLimit), baseline.ManagedHeap + HeapNoise))
            ledger.Violate($"managed heap grew by {Growth(baseline.ManagedHeap, final.ManagedHeap)} after the warm-up (limit +{GrowthLimit:P0}).");
        // The data part of RSS is printed to tell a leak of buffers or stacks from code the runtime compiled late
        // (Probes.DataRss); the limit applies to the whole RSS, after the allocator's trim.
        if (final.Rss > baseline.Rss * (1 + GrowthLimit))
            ledger.Violate($"RSS grew by {Growth(baseline.Rss, final.Rss)} after the warm-up (limit +{GrowthLimit:P0}; of it resident data {Growth(baseline.DataRss, final.DataRss)}).");
        Console.WriteLine($"soak: after the warm-up: heap {Growth(baseline.ManagedHeap, final.ManagedHeap)}, RSS {Growth(baseline.Rss, final.Rss)}, data RSS {Growth(baseline.DataRss, final.DataRss)}, descriptors {baseline.NonAssemblyDescriptors} → {fds} (assemblies aside)");
    }

    private static string Growth(long from, long to) => $"{(to - from) / (double)from:+0.0%;-0.0%;0.0%} ({from / 1048576.0:0.00} → {to / 1048576.0:0.00} MiB)";

    /// <summary>After the servers stop, the hub holds no carrier.</summary>
    private void CheckNothingHeld(Hub hub)
    {
        var deadline = _clock.Elapsed + TimeSpan.FromSeconds(10);
        while (hub.GetRunInfo().Carriers.HeldByThisHub > 0 && _clock.Elapsed < deadline) Green.Sleep(50);
        var carriers = hub.GetRunInfo().Carriers;
        Console.WriteLine($"soak: servers stopped: {carriers.HeldByThisHub} carriers held by the hub, {carriers.Threads} carrier threads");
        if (carriers.HeldByThisHub > 0)
        {
            _context.Ledger.Violate($"the hub still holds {carriers.HeldByThisHub} carrier(s) after every greenlet ended.");
            Console.WriteLine(hub.FormatRunInfo());
        }
    }

    /// <summary>Waits until the idle carriers retire (a carrier idle for 10 s ends its thread, down to the pool's
    /// floor of max(4, 2 × CPUs)); the carriers that keep parked service greenlets stay.</summary>
    private void WaitForIdleCarriersToRetire(Hub hub)
    {
        int floor = Math.Max(4, Environment.ProcessorCount * 2);
        var peak = hub.GetRunInfo().Carriers;
        var deadline = _clock.Elapsed + TimeSpan.FromSeconds(30);
        CarrierPoolInfo now;
        while ((now = hub.GetRunInfo().Carriers).Threads > floor + now.HeldByThisHub && _clock.Elapsed < deadline) Green.Sleep(250);
        Console.WriteLine($"        carriers {peak.Threads} when the load paused, {now.Threads} after idling ({now.Idle} idle, {now.HeldByThisHub} held)");
        if (now.Threads > floor + now.HeldByThisHub)
            _context.Ledger.Violate($"idle carriers did not retire: {now.Threads} threads after 30 s idle ({now.HeldByThisHub} held, floor {floor}).");
    }
}
