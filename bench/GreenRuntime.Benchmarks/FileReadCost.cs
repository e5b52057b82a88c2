using System.Diagnostics;
using System.Runtime.InteropServices;
using GreenRuntime.Cooperative;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What a cached file read costs on a greenlet under <c>Patch.All()</c>, against the plain system call: a 1 KB
/// <c>pread</c> of a file in the page cache, called directly; <c>RandomAccess.Read</c> off the hub (the original);
/// on a greenlet (inline <c>preadv2(RWF_NOWAIT)</c>); on a greenlet with the inline path switched off (a thread-pool
/// round trip, the way before); and a whole <c>File.ReadAllText</c> of a 1 KB file off and on the hub.
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-file [calls=20000] [directory=temp]
/// Best of 7 rounds, ns per call. Give <c>/dev/shm</c> as the directory to measure a tmpfs file, which the kernel
/// reads without RWF_NOWAIT (plain <c>pread</c> inline).
/// </remarks>
internal static partial class FileReadCost
{
    public static unsafe void Run(int calls, string? directory)
    {
        string path = directory is null ? Path.GetTempFileName() : Path.Combine(directory, Path.GetRandomFileName());
        File.WriteAllText(path, "Hello from {path}\n" + new string('.', 1000) + "\n");
        try
        {
            Patch.All();
            using SafeFileHandle handle = File.OpenHandle(path);
            byte[] buffer = new byte[1024];
            int fd = (int)handle.DangerousGetHandle();
            var figures = new Dictionary<string, double>
            {
                ["pread_syscall"] = Best(calls, () =>
                {
                    fixed (byte* p = buffer)
                        for (int i = 0; i < calls; i++) _ = PRead(fd, p, buffer.Length, 0);
                }),
                ["RandomAccess.Read_off_hub"] = Best(calls, () =>
                {
                    for (int i = 0; i < calls; i++) _ = RandomAccess.Read(handle, buffer, 0);
                }),
                ["RandomAccess.Read_greenlet_inline"] = OnHub(calls, () =>
                {
                    for (int i = 0; i < calls; i++) _ = RandomAccess.Read(handle, buffer, 0);
                }),
            };
            NoWaitFileIo.Enabled = false;
            figures["RandomAccess.Read_greenlet_thread_pool"] = OnHub(calls / 10, () =>
            {
                for (int i = 0; i < calls / 10; i++) _ = RandomAccess.Read(handle, buffer, 0);
            });
            NoWaitFileIo.Enabled = true;
            figures["File.ReadAllText_1KB_off_hub"] = Best(calls / 10, () =>
            {
                for (int i = 0; i < calls / 10; i++) _ = File.ReadAllText(path);
            });
            figures["File.ReadAllText_1KB_greenlet"] = OnHub(calls / 10, () =>
            {
                for (int i = 0; i < calls / 10; i++) _ = File.ReadAllText(path);
            });
            figures["File.ReadAllText_1KB_1000_greenlets_one_each"] = ManyGreenlets(1000, () => File.ReadAllText(path));
            figures["no_file_1000_greenlets_one_each"] = ManyGreenlets(1000, () => { });
            figures["sleep_then_File.ReadAllText_1000_greenlets"] = ManyGreenlets(1000, () => { Thread.Sleep(20); File.ReadAllText(path); });
            figures["sleep_only_1000_greenlets"] = ManyGreenlets(1000, () => Thread.Sleep(20));
            foreach (var (name, ns) in figures)
                Console.WriteLine($"{{\"bench\": \"{name}\", \"N\": {calls}, \"ns_per_call\": {ns:F0}}}");
            Console.WriteLine($"{{\"bench\": \"cached_read_greenlet_vs_syscall\", \"ratio\": {figures["RandomAccess.Read_greenlet_inline"] / figures["pread_syscall"]:F2}}}");
        }
        finally
        {
            Patch.UndoAll();
            File.Delete(path);
        }
    }

    /// <summary>ns per greenlet for <paramref name="count"/> greenlets that each make one call (best of 7):
    /// each greenlet runs on its own carrier thread, as a server's connections do.</summary>
    private static double ManyGreenlets(int count, Action call)
    {
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
        double best = double.MaxValue;
        for (int round = 0; round < 8; round++)
        {
            var watch = Stopwatch.StartNew();
            Green.JoinAll(Enumerable.Range(0, count).Select(_ => Green.Spawn(call)).ToList());
            if (round > 0) best = Math.Min(best, watch.Elapsed.TotalNanoseconds / count);
        }
        return best;
    }

    private static double OnHub(int calls, Action loop)
    {
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
        double result = 0;
        Green.Spawn(() => result = Best(calls, loop)).Get();
        return result;
    }

    private static double Best(int calls, Action loop) => BestOf.NsPerCall(calls, loop, rounds: 7, settle: false);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static unsafe partial nint PRead(int fd, byte* buffer, nint count, long offset);
}
