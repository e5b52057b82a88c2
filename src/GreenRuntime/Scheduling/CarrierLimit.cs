using System.Globalization;

namespace GreenRuntime.Scheduling;

/// <summary>
/// How many carrier threads this machine lets the process add, and which resource says so. Every suspended
/// stackful greenlet owns a thread, so the kernel's limits on threads are the limits on suspended greenlets.
/// </summary>
/// <remarks>
/// Read once per process from Linux: <c>vm.max_map_count</c> (the runtime aborts, uncatchably, when a new thread
/// cannot map its stack and guard pages; a parked .NET thread costs <see cref="MappingsPerCarrier"/> mappings),
/// <c>kernel.threads-max</c> and <c>kernel.pid_max</c> (system-wide: the threads of every process count), the
/// cgroup's <c>pids.max</c>, available memory (<see cref="BytesPerCarrier"/> of RSS and kernel memory per
/// parked thread), and under strict overcommit the memory left to commit (a whole stack per carrier). What is left of each, minus a margin for the rest of the process, bounds the carriers; the
/// smallest wins. Elsewhere (no /proc) the limit is a fixed, conservative number.
/// </remarks>
internal sealed class CarrierLimit
{
    /// <summary>Memory mappings one parked carrier costs (stack, guard page, runtime's per-thread allocations), measured on .NET 10.</summary>
    public const int MappingsPerCarrier = 4;

    /// <summary>Real memory one parked carrier costs: about 17 KiB of RSS plus 22 KiB of kernel memory, rounded up.</summary>
    public const long BytesPerCarrier = 64 * 1024;

    private const int FallbackLimit = 10_000;

    private static readonly Lazy<CarrierLimit> s_machine = new(Measure, LazyThreadSafetyMode.PublicationOnly);

    /// <summary>The most carriers the process should add.</summary>
    public int Value { get; }

    /// <summary>The resource that set <see cref="Value"/>, with its numbers and how to raise it.</summary>
    public string Source { get; }

    private CarrierLimit(int value, string source)
    {
        Value = value;
        Source = source;
    }

    /// <summary>The limit of this machine, measured on first use.</summary>
    public static CarrierLimit Machine => s_machine.Value;

    private static CarrierLimit Measure()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/sys/vm/max_map_count"))
            return new CarrierLimit(FallbackLimit, $"a fixed limit of {FallbackLimit:N0} (no Linux /proc to measure this machine)");

        var candidates = new List<(long Carriers, string Source)>();
        if (ReadLong("/proc/sys/vm/max_map_count") is { } maxMaps)
        {
            long used = CountLines("/proc/self/maps");
            candidates.Add(((maxMaps - used) / MappingsPerCarrier,
                $"vm.max_map_count = {maxMaps:N0} ({used:N0} mappings in use, {MappingsPerCarrier} per carrier; raise with sysctl -w vm.max_map_count=N)"));
        }
        long systemThreads = SystemThreads();
        if (ReadLong("/proc/sys/kernel/threads-max") is { } threadsMax)
            candidates.Add((threadsMax - systemThreads, $"kernel.threads-max = {threadsMax:N0} ({systemThreads:N0} threads on the system; raise with sysctl -w kernel.threads-max=N)"));
        if (ReadLong("/proc/sys/kernel/pid_max") is { } pidMax)
            candidates.Add((pidMax - systemThreads, $"kernel.pid_max = {pidMax:N0} ({systemThreads:N0} threads on the system; raise with sysctl -w kernel.pid_max=N, up to 4,194,304)"));
        if (CgroupPids() is { } pids)
            candidates.Add((pids.Max - pids.Current, $"the cgroup's pids.max = {pids.Max:N0} ({pids.Current:N0} in use; raise the container's pids limit)"));
        if (MemInfo("MemAvailable") is { } available)
            candidates.Add((available / BytesPerCarrier, $"available memory = {available / (1024 * 1024):N0} MiB ({BytesPerCarrier / 1024} KiB per parked carrier)"));
        // Under strict overcommit the kernel commits a thread's whole stack when it maps it.
        if (ReadLong("/proc/sys/vm/overcommit_memory") == 2 && MemInfo("CommitLimit") is { } commitLimit && MemInfo("Committed_AS") is { } committed)
        {
            long stack = CarrierPool.DefaultStackSize;
            candidates.Add(((commitLimit - committed) / stack,
                $"strict overcommit (vm.overcommit_memory = 2): {(commitLimit - committed) / (1024 * 1024):N0} MiB left to commit, {stack / 1024:N0} KiB per carrier stack; lower HubOptions.CarrierStackSize or raise vm.overcommit_ratio"));
        }

        if (candidates.Count == 0)
            return new CarrierLimit(FallbackLimit, $"a fixed limit of {FallbackLimit:N0} (the kernel's limits could not be read)");
        var (carriers, source) = candidates.MinBy(c => c.Carriers);
        // Leave a tenth, and at least 256 threads, to the rest of the process (thread pool, runtime, libraries).
        long withMargin = Math.Min(carriers - 256, carriers * 9 / 10);
        return new CarrierLimit((int)Math.Clamp(withMargin, 2, int.MaxValue), source);
    }

    private static long? ReadLong(string path)
    {
        try
        {
            var text = File.ReadAllText(path).Trim();
            return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static long CountLines(string path)
    {
        try
        {
            return File.ReadLines(path).LongCount();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Threads of every process: the 4th field of /proc/loadavg is "running/total".</summary>
    private static long SystemThreads()
    {
        try
        {
            var fields = File.ReadAllText("/proc/loadavg").Split(' ');
            var total = fields.Length > 3 ? fields[3].Split('/') : [];
            return total.Length == 2 && long.TryParse(total[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>pids.max and pids.current of this process's cgroup (v2, or v1's pids controller); null when unlimited or unknown.</summary>
    private static (long Max, long Current)? CgroupPids()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/cgroup"))
            {
                var parts = line.Split(':', 3);
                if (parts.Length != 3) continue;
                string? dir = parts[1] == "" ? "/sys/fs/cgroup" + parts[2]
                    : parts[1].Split(',').Contains("pids") ? "/sys/fs/cgroup/pids" + parts[2] : null;
                if (dir is null) continue;
                if (ReadLong(Path.Combine(dir, "pids.max")) is { } max)
                    return (max, ReadLong(Path.Combine(dir, "pids.current")) ?? 0);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null; // "max" (unlimited) does not parse: no limit from the cgroup
    }

    /// <summary>A /proc/meminfo field, in bytes.</summary>
    private static long? MemInfo(string field)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                if (!line.StartsWith(field + ":", StringComparison.Ordinal)) continue;
                var kb = line[(field.Length + 1)..].Trim().Split(' ')[0];
                return long.TryParse(kb, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value * 1024 : null;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null;
    }
}
