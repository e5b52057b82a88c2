// Reading the stack of another thread of this process while it is still blocked.
//
// The problem: the blocking monitor runs on its own thread and must learn where the thread holding the baton is
// stuck — inside an unpatched Thread.Sleep, a lock, a CPU loop — *while it is stuck*. .NET offers no in-process
// way to do that: new StackTrace(Thread) is gone since .NET Core, Thread.Suspend is unsupported, and a signal
// handler cannot run managed code. Something outside the process has to stop it and walk the stack.
//
// Design chosen: the runtime's own `createdump` tool (shipped next to libcoreclr.so in every shared-framework
// install) in crash-report-only mode. `createdump --crashreportonly -f BASE PID` ptrace-attaches every thread,
// walks each one with the runtime's DAC, writes BASE.crashreport.json (managed method names per OS thread id, about
// 50 KB, no dump file) and detaches. Measured here (.NET 10.0.12, linux-x64, 2 vCPU): 0.45–1.3 s per capture for a
// process of ~10 threads, during which the whole process is paused (a ticker thread saw gaps of 0.35–1.2 s, the
// larger ones on a machine loaded by other builds); the pause grows with the thread count (see MaxThreads), so no
// capture is tried above 64 threads. No NuGet package needed.
//
// Protocol (Capture):
//   1. Start `/bin/sh -c 'read _; timeout -s KILL T createdump ...; [ $? = 0 ] || kill -CONT PID'` with stdin
//      redirected; the shell waits for one line.
//   2. prctl(PR_SET_PTRACER, shell pid): under Yama ptrace_scope=1 a child may not ptrace its parent unless the
//      parent names it (or an ancestor of it) as its tracer. Without Yama the call fails harmlessly.
//   3. Write the line: the shell runs createdump, which pauses us, writes the report and resumes us.
//   4. Clear PR_SET_PTRACER, read the JSON, pick the thread whose native_thread_id is the baton holder's TID,
//      delete the file.
// Safety: `timeout -s KILL` bounds createdump from outside the process (our own threads are frozen meanwhile, so an
// in-process watchdog could not act); if it had to be killed, the shell sends SIGCONT to us in case the kernel
// left us group-stopped. We also stop waiting after T + 5 s. Every failure becomes a reason string, never an
// exception: a report without a stack is better than a crashed monitor.
//
// Rejected designs
//   * ClrMD DataTarget.CreateSnapshotAndAttach: Windows only (throws PlatformNotSupportedException on Linux).
//   * ClrMD DataTarget.AttachToProcess(own pid): ptrace cannot attach to a thread of the caller's own thread group.
//   * DiagnosticsClient.WriteDump(own pid) + ClrMD DataTarget.LoadDump: works (measured 480–570 ms, a 10 MB
//     "Normal" minidump, same ~0.5 s pause, +500 ms for the first DAC load, and the DAC must be passed explicitly
//     with ignoreMismatch), but needs two packages, writes 10 MB per episode, and the runtime's createdump then
//     prints "[createdump] ..." lines on the application's stdout.
//   * EventPipe's sample profiler (DiagnosticsClient + TraceEvent): stacks arrive as addresses that need method
//     rundown to resolve, and sampling threads blocked in native code is what it does worst.
//   * The stack at release (Environment.StackTrace on the next switch): by then the blocking frame has returned.
//   * Not tried yet, and the likely next step: an EventPipe session on our own process with the sample profiler
//     (what `dotnet-stack report` does): the runtime suspends threads GC-style for one sample, no ptrace, so the cost
//     does not grow with threads (dotnet-stack took 3.3 s wall with 10 and with 1,000 threads, most of it tool start-up,
//     and found a spinning frame). Needs DiagnosticsClient + TraceEvent to resolve the stacks' method names.

using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace GreenRuntime.Diagnostics;

/// <summary>Captures the managed stack of one OS thread of this process while it runs (see the header comment).</summary>
internal static class ThreadStackCapture
{
    private const int PrSetPtracer = 0x59616d61;
    private static readonly object s_gate = new();

    /// <summary>The outcome: either the frames (innermost first) or why there are none.</summary>
    public readonly record struct Result(IReadOnlyList<string>? Frames, string? Failure, TimeSpan Duration);

    /// <summary>
    /// Above this many threads in the process, no capture is tried. createdump walks every thread, and its pause grows
    /// with them: measured here (2 vCPU, loaded) 0.7 s with 9 threads, 2.6 s with ~60, 3.5 s with 211, 13.5 s with 1,012.
    /// </summary>
    internal static int MaxThreads = 64;

    private static long s_captureTicks, s_captureStartedAt;

    /// <summary>
    /// Stopwatch ticks spent in captures so far, including the one in progress up to <paramref name="now"/>: an upper
    /// bound of the time the process was frozen by them. The blocking monitors do not count that time against a holder.
    /// </summary>
    public static long CaptureTicks(long now)
    {
        long started = Volatile.Read(ref s_captureStartedAt);
        return Volatile.Read(ref s_captureTicks) + (started != 0 ? Math.Max(0, now - started) : 0);
    }

    private static int s_warmedUp;
    private static readonly ManualResetEventSlim s_warmUpDone = new();

    /// <summary>
    /// Prepares a first capture, once per process: the first Process.Start and the first run of createdump are slow
    /// (measured 90–160 ms before the process is frozen, against 5–20 ms afterwards), long enough for a 300 ms
    /// episode to end before its snapshot. A monitor calls this when an epoch reaches half of MaxBlockingTime (not at
    /// start-up: a process spawn there slowed timing-sensitive start-up code measurably).
    /// Runs <c>createdump --help</c> (which only prints its usage) on a background thread; never throws.
    /// </summary>
    public static void WarmUpInBackground()
    {
        if (Interlocked.Exchange(ref s_warmedUp, 1) != 0) return;
        if (!OperatingSystem.IsLinux())
        {
            s_warmUpDone.Set();
            return;
        }
        // On a thread of its own: the monitor must keep sampling meanwhile.
        Scheduling.RuntimeThread.Start(new Thread(WarmUp, 256 * 1024) { IsBackground = true, Name = "GreenRuntime stack-capture warm-up" });
    }

    private static void WarmUp()
    {
        try
        {
            var createdump = Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "createdump");
            if (!File.Exists(createdump) || !File.Exists("/bin/sh")) return;
            var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("\"$1\" --help >/dev/null 2>&1; exit 0");
            psi.ArgumentList.Add("greenruntime-warmup");
            psi.ArgumentList.Add(createdump);
            using var process = Process.Start(psi);
            if (process != null && !process.WaitForExit(5000))
                process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or IOException)
        {
            // Only a slower first capture.
        }
        finally
        {
            s_warmUpDone.Set();
        }
    }

    /// <summary>Waits until the warm-up has run (tests that need a fast first capture).</summary>
    internal static bool WaitForWarmUp(TimeSpan timeout)
    {
        WarmUpInBackground();
        return s_warmUpDone.Wait(timeout);
    }

    /// <summary>
    /// Captures the stack of the thread with OS id <paramref name="osThreadId"/>. Never throws. Only one capture
    /// runs at a time in the process; a concurrent request fails with a reason instead of waiting.
    /// </summary>
    public static Result Capture(int osThreadId, TimeSpan timeout)
    {
        var started = Stopwatch.GetTimestamp();
        if (!OperatingSystem.IsLinux())
            return new(null, "stack capture is implemented for Linux only (it uses the runtime's createdump crash reports)", TimeSpan.Zero);
        if (osThreadId <= 0)
            return new(null, "the blocked thread's OS id is unknown", TimeSpan.Zero);
        int threads = CountThreads();
        if (threads > MaxThreads)
            return new(null, $"the process has {threads} threads; createdump walks every one of them and would pause the process for seconds (captures are made only with at most {MaxThreads} threads)", TimeSpan.Zero);
        if (!Monitor.TryEnter(s_gate))
            return new(null, "another stack capture was in progress in this process", TimeSpan.Zero);
        Volatile.Write(ref s_captureStartedAt, started);
        try
        {
            var (frames, failure) = CaptureLocked(osThreadId, timeout);
            return new(frames, failure, Stopwatch.GetElapsedTime(started));
        }
        catch (Exception e)
        {
            return new(null, $"stack capture failed: {e.GetType().Name}: {e.Message}", Stopwatch.GetElapsedTime(started));
        }
        finally
        {
            Interlocked.Add(ref s_captureTicks, Stopwatch.GetTimestamp() - started);
            Volatile.Write(ref s_captureStartedAt, 0);
            Monitor.Exit(s_gate);
        }
    }

    private static (IReadOnlyList<string>?, string?) CaptureLocked(int osThreadId, TimeSpan timeout)
    {
        var createdump = Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "createdump");
        if (!File.Exists(createdump))
            return (null, $"the runtime's createdump tool is not at {createdump} (single-file or NativeAOT app?)");
        if (!File.Exists("/bin/sh"))
            return (null, "/bin/sh is missing; it runs createdump under a timeout");
        int pid = Environment.ProcessId;
        var basePath = Path.Combine(Path.GetTempPath(), $"greenruntime-stack-{pid}-{Guid.NewGuid():N}");
        var reportPath = basePath + ".crashreport.json";
        int seconds = Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds));
        var psi = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("read _ || exit 90; timeout -s KILL \"$1\" \"$2\" --crashreportonly -f \"$3\" \"$4\"; st=$?; [ $st -eq 0 ] || kill -CONT \"$4\" 2>/dev/null; exit $st");
        psi.ArgumentList.Add("greenruntime-stack");
        psi.ArgumentList.Add(seconds.ToString(CultureInfo.InvariantCulture));
        psi.ArgumentList.Add(createdump);
        psi.ArgumentList.Add(basePath);
        psi.ArgumentList.Add(pid.ToString(CultureInfo.InvariantCulture));
        try
        {
            using var process = Process.Start(psi) ?? throw new InvalidOperationException("Process.Start returned null.");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            SetPtracer(process.Id);
            try
            {
                process.StandardInput.WriteLine();
                process.StandardInput.Close();
                if (!process.WaitForExit(TimeSpan.FromSeconds(seconds + 5)))
                {
                    try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    return (null, $"createdump did not finish within {seconds + 5} s");
                }
            }
            finally
            {
                SetPtracer(0);
            }
            if (process.ExitCode != 0)
            {
                var output = (stdout.Wait(1000) ? stdout.Result : "") + (stderr.Wait(1000) ? stderr.Result : "");
                return (null, $"createdump failed with exit code {process.ExitCode}{(process.ExitCode == 137 ? " (killed after the timeout)" : "")}: {Squash(output)}");
            }
            if (!File.Exists(reportPath))
                return (null, "createdump wrote no crash report");
            return ParseReport(File.ReadAllBytes(reportPath), osThreadId);
        }
        finally
        {
            TryDelete(reportPath);
            TryDelete(basePath);
        }
    }

    /// <summary>Threads of this process now (Linux: entries of /proc/self/task), or 0 if unknown.</summary>
    internal static int CountThreads()
    {
        try
        {
            return Directory.EnumerateDirectories("/proc/self/task").Count();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Picks the thread's frames out of a createdump crash report (JSON).</summary>
    internal static (IReadOnlyList<string>?, string?) ParseReport(byte[] json, int osThreadId)
    {
        using var doc = JsonDocument.Parse(json);
        if (!doc.RootElement.TryGetProperty("payload", out var payload) || !payload.TryGetProperty("threads", out var threads))
            return (null, "the crash report has no thread list");
        foreach (var thread in threads.EnumerateArray())
        {
            if (!thread.TryGetProperty("native_thread_id", out var idElement) || ParseHex(idElement.GetString()) != osThreadId)
                continue;
            var frames = new List<string>();
            if (thread.TryGetProperty("stack_frames", out var stack))
            {
                foreach (var frame in stack.EnumerateArray())
                {
                    string line;
                    if (Text(frame, "is_managed") == "true")
                    {
                        var method = Text(frame, "method_name");
                        line = method is null ? "[runtime stub]" : $"{method} [{Text(frame, "filename")}]";
                    }
                    else
                    {
                        line = $"[native code: {Text(frame, "native_module") ?? "unknown module"}]";
                    }
                    if (frames.Count == 0 || frames[^1] != line) frames.Add(line); // collapse runs of native frames
                }
            }
            return frames.Count == 0 ? (null, "the crash report has no frames for the blocked thread") : (frames, null);
        }
        return (null, $"the crash report has no thread with OS id {osThreadId}");
    }

    /// <summary>Formats frames like a .NET stack trace: one <c>   at ...</c> line each.</summary>
    public static string Format(IReadOnlyList<string> frames, int maxFrames = 48)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < frames.Count && i < maxFrames; i++)
        {
            if (i > 0) sb.Append('\n');
            sb.Append("   at ").Append(frames[i]);
        }
        if (frames.Count > maxFrames) sb.Append('\n').Append(CultureInfo.InvariantCulture, $"   ... {frames.Count - maxFrames} more frames");
        return sb.ToString();
    }

    private static string? Text(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static long ParseHex(string? text) =>
        text is not null && text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
        && long.TryParse(text.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var v) ? v : -1;

    private static string Squash(string text)
    {
        text = text.Replace('\n', ' ').Trim();
        return text.Length > 300 ? text[..300] + "..." : text;
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (File.Exists(path)) File.Delete(path);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static void SetPtracer(int pid)
    {
        try
        {
            _ = Prctl(PrSetPtracer, (nuint)pid, 0, 0, 0); // EINVAL without Yama: nothing to allow then
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }
    }

    [DllImport("libc", EntryPoint = "prctl")]
    private static extern int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);
}
