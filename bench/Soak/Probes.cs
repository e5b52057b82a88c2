namespace GreenRuntime.Soak;

/// <summary>What the process holds at one quiet moment: the numbers that must come back to a baseline.</summary>
internal sealed record Snapshot(int FileDescriptors, long ManagedHeap, long GcCommitted, long Rss, int CarrierThreads, int CarriersIdle, int CarriersHeld, int Timers)
{
    /// <summary>What each open descriptor is (its /proc/self/fd link target), to name the ones a leak adds.</summary>
    public IReadOnlyList<string> DescriptorTargets { get; init; } = [];

    /// <summary>Open descriptors other than loaded assemblies (see <see cref="Probes.IsAssembly"/>).</summary>
    public int NonAssemblyDescriptors => DescriptorTargets.Count(t => !Probes.IsAssembly(t));

    /// <summary>Resident data: RSS without file-backed and executable mappings (see <see cref="Probes.DataRss"/>).</summary>
    public long DataRss { get; init; }

    public override string ToString() =>
        $"fds {FileDescriptors}, heap {ManagedHeap / 1024.0 / 1024:0.00} MiB (GC committed {GcCommitted / 1024.0 / 1024:0.0} MiB), RSS {Rss / 1024.0 / 1024:0.0} MiB (data {DataRss / 1024.0 / 1024:0.0} MiB), " +
        $"carriers {CarrierThreads} ({CarriersIdle} idle, {CarriersHeld} held by the hub), timers {Timers}";
}

/// <summary>Reads the process's resources from /proc and the hub's run info.</summary>
internal static class Probes
{
    public static int FileDescriptors() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>The link target of every open descriptor (<c>socket:[inode]</c>, <c>anon_inode:[eventpoll]</c>, a path).</summary>
    public static List<string> DescriptorTargets()
    {
        var targets = new List<string>();
        foreach (var fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                targets.Add(new FileInfo(fd).LinkTarget ?? "?");
            }
            catch (IOException)
            {
                // Closed between the listing and the read: not open any more.
            }
        }
        return targets;
    }

    /// <summary>
    /// Whether a descriptor is a loaded assembly: the runtime keeps each assembly's file open for as long as the
    /// process lives, so an assembly first used during the load (System.IO.Pipes, say) adds descriptors that are not a
    /// leak. (A rebuilt assembly reads "… (deleted)".)
    /// </summary>
    public static bool IsAssembly(string target) =>
        target.EndsWith(".dll", StringComparison.Ordinal) || target.EndsWith(".dll (deleted)", StringComparison.Ordinal);

    /// <summary>
    /// Resident memory that holds data: the sum of <c>Rss</c> over <c>/proc/self/smaps</c> mappings that are neither
    /// file-backed (assemblies and native libraries, loaded once for good) nor executable (the JIT's code heaps, which
    /// grow as tiered compilation recompiles hot methods for minutes, all the more on a busy machine). A leak of
    /// objects, buffers or thread stacks shows here, and so does the runtime's own bookkeeping for code it compiled
    /// late (its loader heaps), so it is printed for diagnosis, not checked.
    /// </summary>
    public static long DataRss()
    {
        long total = 0;
        bool counted = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Length > 0 && (char.IsAsciiHexDigit(line[0])) && line.Contains('-'))
            {
                // "start-end perms offset dev inode [path]"
                var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                string perms = fields.Length > 1 ? fields[1] : "";
                string path = fields.Length > 5 ? fields[5].Trim() : "";
                bool fileBacked = path.StartsWith('/');
                counted = !fileBacked && !perms.Contains('x');
            }
            else if (counted && line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                total += long.Parse(line.AsSpan(4).Trim().ToString().Split(' ')[0]) * 1024;
            }
        }
        return total;
    }

    /// <summary>The kinds of descriptor in <paramref name="now"/> beyond those in <paramref name="before"/>: sockets and
    /// anonymous inodes by kind (their inode numbers differ from run to run), files by path.</summary>
    public static string Added(IReadOnlyList<string> before, IReadOnlyList<string> now)
    {
        static string Kind(string target) => target.StartsWith("socket:", StringComparison.Ordinal) ? "socket" : target.StartsWith("pipe:", StringComparison.Ordinal) ? "pipe" : target;
        var left = before.Select(Kind).GroupBy(k => k).ToDictionary(g => g.Key, g => g.Count());
        var added = new List<string>();
        foreach (var kind in now.Select(Kind))
        {
            if (left.TryGetValue(kind, out int n) && n > 0) left[kind] = n - 1;
            else added.Add(kind);
        }
        return added.Count == 0 ? "none of a new kind" : string.Join(", ", added.GroupBy(k => k).Select(g => $"{g.Count()} × {g.Key}"));
    }

    /// <summary>Resident set size in bytes (VmRSS of /proc/self/status).</summary>
    public static long Rss()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.AsSpan(6).Trim().ToString().Split(' ')[0]) * 1024;
        return 0;
    }

    /// <summary>The managed heap after full, compacting collections (finalizers run, so dropped sockets close).
    /// The last one is aggressive: it also compacts the large-object heap and gives free memory back to the OS,
    /// so that RSS measures what is in use rather than what the GC kept in reserve under load.</summary>
    public static long SettledHeap()
    {
        for (int i = 0; i < 2; i++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        TrimNativeHeap();
        return GC.GetTotalMemory(forceFullCollection: false);
    }

    /// <summary>
    /// Gives the C allocator's free memory back to the OS (glibc's <c>malloc_trim</c>), so that RSS measures native
    /// memory in use, not what the allocator keeps for reuse: every thread that ever allocated has an arena (up to
    /// 8 per core) that keeps freed chunks. Measured with seed 21 over 600 s: RSS +15.3 % at the end without the trim,
    /// +7.7 % with it (managed heap below its baseline in both).
    /// A no-op where the C library has no such call.
    /// </summary>
    private static void TrimNativeHeap()
    {
        if (s_noTrim) return;
        try
        {
            MallocTrim(0);
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            s_noTrim = true;
        }
    }

    private static bool s_noTrim;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    public static Snapshot Take(Hub hub)
    {
        long heap = SettledHeap();
        var info = hub.GetRunInfo();
        var carriers = info.Carriers;
        return new Snapshot(FileDescriptors(), heap, GC.GetGCMemoryInfo(GCKind.Any).TotalCommittedBytes, Rss(), carriers.Threads, carriers.Idle, carriers.HeldByThisHub, info.TimerCount)
        {
            DescriptorTargets = DescriptorTargets(),
            DataRss = DataRss(),
        };
    }
}
