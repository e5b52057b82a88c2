using System.Diagnostics;
using GreenRuntime.Cooperative;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// Buffered file writes on greenlets under <c>Patch.All()</c>, with small writes inline (now) and with the inline path
/// off (every write through the thread pool, as ext4 writes went before), alternated: 4 greenlets making 20,000 writes
/// of 100 bytes in all (a <c>FileStream</c> each, no buffer), and a ticker greenlet's longest gap (<c>Green.Sleep(5)</c>
/// in a loop) while another greenlet writes a large file in 64 KiB writes and closes it (how long the close took is
/// printed too: ext4 starts the writeback of a file truncated and rewritten when it is closed, inline on the hub).
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-disk-write [directory=temp] [MiB=256]
/// Three rounds of each; on ext4 (and other file systems that refuse RWF_NOWAIT for buffered writes) the inline path is
/// the guarded plain pwrite of NoWaitFileIo.Disk.cs.
/// </remarks>
internal static class FileWriteCost
{
    public static void Run(string? directory, int mib)
    {
        directory ??= Path.GetTempPath();
        Patch.All();
        try
        {
            using var hub = new Hub();
            foreach (bool inline in new[] { true, false, true, false, true, false })
            {
                NoWaitFileIo.Enabled = inline;
                SmallWrites(directory, inline);
            }
            foreach (bool inline in new[] { true, false, true, false, true, false })
            {
                NoWaitFileIo.Enabled = inline;
                BigFileBesideATicker(directory, mib, inline);
            }
        }
        finally
        {
            NoWaitFileIo.Enabled = true;
            Patch.UndoAll();
        }
    }

    private static double CpuMs() => Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds;

    private static void SmallWrites(string directory, bool inline)
    {
        var data = new byte[100];
        double cpu = CpuMs();
        var watch = Stopwatch.StartNew();
        Green.JoinAll(Enumerable.Range(0, 4).Select(g => Green.Spawn(() =>
        {
            string file = Path.Combine(directory, Path.GetRandomFileName());
            using (var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0))
                for (int i = 0; i < 5_000; i++) stream.Write(data);
            File.Delete(file);
        })).ToList(), raiseError: true);
        Console.WriteLine($"{{\"bench\": \"20000_writes_of_100B_4_greenlets\", \"inline\": {(inline ? "true" : "false")}, \"ms\": {watch.Elapsed.TotalMilliseconds:F0}, \"cpu_ms\": {CpuMs() - cpu:F0}}}");
    }

    private static void BigFileBesideATicker(string directory, int mib, bool inline)
    {
        string file = Path.Combine(directory, Path.GetRandomFileName());
        bool done = false;
        double longest = 0, closeMs = 0;
        var ticker = Green.Spawn(() =>
        {
            long last = Stopwatch.GetTimestamp();
            while (!done)
            {
                Green.Sleep(5);
                long now = Stopwatch.GetTimestamp();
                double gap = Stopwatch.GetElapsedTime(last, now).TotalMilliseconds;
                longest = Math.Max(longest, gap);
                last = now;
            }
        });
        Green.Sleep(20);
        var data = new byte[64 * 1024];
        var watch = Stopwatch.StartNew();
        Green.Spawn(() =>
        {
            var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
            for (long written = 0; written < (long)mib << 20; written += data.Length) stream.Write(data);
            long start = Stopwatch.GetTimestamp();
            stream.Dispose();
            closeMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }).Join();
        double ms = watch.Elapsed.TotalMilliseconds;
        done = true;
        ticker.Join();
        File.Delete(file);
        Console.WriteLine($"{{\"bench\": \"{mib}MiB_in_64KiB_writes_beside_a_ticker\", \"inline\": {(inline ? "true" : "false")}, \"ms\": {ms:F0}, \"longest_gap_ms\": {longest:F1}, \"close_ms\": {closeMs:F1}}}");
        Green.Sleep(300);
    }
}
