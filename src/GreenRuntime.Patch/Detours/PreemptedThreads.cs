// The threads a detour's jump could catch inside a body's first bytes, and the wait until each has moved on.
//
// Once a batch has diverted its calls (Detour.GoLive), only a thread that was already inside a body's first
// instructions can still be there, and a thread on a CPU leaves them within nanoseconds. What stays is a thread the
// OS preempted right there: runnable but not running. The kernel tells which threads those can be: a thread that is
// not runnable (state other than R in /proc/self/task/<tid>/stat) is blocked in the kernel and so not inside a
// managed prologue. For each runnable thread, /proc/self/task/<tid>/schedstat gives the number of times it was put on
// a CPU and its CPU time. Once either says it ran after the diversion, it is past the first bytes:
//   - a higher count: it was scheduled again (and runs for at least microseconds, thousands of instructions);
//   - a state other than R: it blocked, which takes a system call, so it got past the first bytes;
//   - 20 ms more CPU time with the same count: it was on a CPU the whole time, never preempted. (A thread preempted
//     just after the snapshot is charged the rest of its slice at that moment, at most one tick: 10 ms at 100 Hz.)
// The minimum wait (25 ms) stays: it covers whatever /proc does not show, and most preempted threads run again
// within it, so they cost nothing more. A thread the OS keeps off the CPU for longer (a low-priority thread on a busy
// machine; one at the lowest priority was seen off the CPU for 1.6 s) is waited for, up to MaxWait; then the
// jump is written anyway, as before (a thread stopped by a debugger or a signal cannot be waited for).
// Without /proc (never on the supported Linux, but not assumed) the snapshot is empty and only the minimum applies.
//
// Measured: SCHED_IDLE threads pinned with a spinning thread to one CPU, calling four targets in a loop while
// batches went live and were undone, crashed the process with an access violation without this wait (once in nine
// runs of that test; most landings in the window go unnoticed, as the displacement's bytes often decode to
// something harmless).

using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>See the header of this file.</summary>
internal static unsafe class PreemptedThreads
{
    /// <summary>The longest the extra wait may last, after the minimum.</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(5);

    /// <summary>CPU time that proves a thread never left its CPU (see the header).</summary>
    private const long RanThroughNanoseconds = 20_000_000;

    private const int ODirectory = 0x10000;
    private const int OCloexec = 0x80000;

    /// <summary>A runnable thread as the snapshot saw it.</summary>
    public readonly record struct Runnable(int Tid, long Slices, long CpuNanoseconds);

    /// <summary>The threads of this process other than the caller that are runnable now (empty when /proc cannot tell).</summary>
    public static List<Runnable> Snapshot()
    {
        var runnable = new List<Runnable>();
        int self = gettid();
        foreach (int tid in ThreadIds())
        {
            if (tid != self && State(tid) == 'R' && Schedule(tid) is { } seen)
            {
                runnable.Add(new Runnable(tid, seen.Slices, seen.CpuNanoseconds));
            }
        }

        return runnable;
    }

    /// <summary>Waits until every thread of <paramref name="runnable"/> has run since the snapshot (see the header), for
    /// at most <see cref="MaxWait"/>, sleeping <paramref name="sleep"/> between looks. Returns how many were still
    /// waited for when the wait gave up.</summary>
    public static int WaitUntilRunAgain(List<Runnable> runnable, Action<long> sleep)
    {
        long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(MaxWait.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        while (true)
        {
            runnable.RemoveAll(HasRunSince);
            if (runnable.Count == 0 || System.Diagnostics.Stopwatch.GetTimestamp() >= deadline)
            {
                return runnable.Count;
            }

            sleep(1_000_000);
        }
    }

    private static bool HasRunSince(Runnable then)
    {
        if (Schedule(then.Tid) is not { } now || State(then.Tid) is not 'R')
        {
            return true; // gone, or blocked since
        }

        return now.Slices > then.Slices || now.CpuNanoseconds - then.CpuNanoseconds >= RanThroughNanoseconds;
    }

    /// <summary>The state letter of /proc/self/task/<paramref name="tid"/>/stat (the field after the command's closing
    /// parenthesis; the command may itself contain parentheses and spaces), or 0 when unreadable.</summary>
    private static char State(int tid)
    {
        Span<byte> text = stackalloc byte[512];
        int length = ReadSmallFile($"/proc/self/task/{tid}/stat", text);
        int close = text[..Math.Max(length, 0)].LastIndexOf((byte)')');
        return close >= 0 && close + 2 < length ? (char)text[close + 2] : '\0';
    }

    /// <summary>CPU time (ns) and times put on a CPU from /proc/self/task/<paramref name="tid"/>/schedstat ("run wait slices").</summary>
    private static (long CpuNanoseconds, long Slices)? Schedule(int tid)
    {
        Span<byte> text = stackalloc byte[128];
        int length = ReadSmallFile($"/proc/self/task/{tid}/schedstat", text);
        if (length <= 0)
        {
            return null;
        }

        Span<long> fields = stackalloc long[3];
        int field = 0;
        bool inNumber = false;
        for (int i = 0; i < length && field < 3; i++)
        {
            byte c = text[i];
            if (c is >= (byte)'0' and <= (byte)'9')
            {
                fields[field] = (fields[field] * 10) + (c - '0');
                inNumber = true;
            }
            else if (inNumber)
            {
                field++;
                inNumber = false;
            }
        }

        return field >= 2 ? (fields[0], fields[2]) : null;
    }

    /// <summary>The ids of this process's threads, read with getdents64 (no managed file API: it may be the one being detoured).</summary>
    private static List<int> ThreadIds()
    {
        var ids = new List<int>();
        int fd = Libc.Open("/proc/self/task", ODirectory | OCloexec);
        if (fd < 0)
        {
            return ids;
        }

        try
        {
            byte* buffer = stackalloc byte[8192];
            nint read;
            while ((read = getdents64(fd, buffer, 8192)) > 0)
            {
                for (nint at = 0; at < read;)
                {
                    // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
                    ushort recordLength = *(ushort*)(buffer + at + 16);
                    byte* name = buffer + at + 19;
                    int tid = 0;
                    for (; *name is >= (byte)'0' and <= (byte)'9'; name++)
                    {
                        tid = (tid * 10) + (*name - '0');
                    }

                    if (*name == 0 && tid > 0)
                    {
                        ids.Add(tid);
                    }

                    at += recordLength;
                }
            }
        }
        finally
        {
            _ = Libc.Close(fd);
        }

        return ids;
    }

    /// <summary>Reads up to <paramref name="into"/>'s length of a /proc file with plain system calls; -1 when it cannot.</summary>
    private static int ReadSmallFile(string path, Span<byte> into)
    {
        int fd = Libc.Open(path, OCloexec);
        if (fd < 0)
        {
            return -1;
        }

        try
        {
            fixed (byte* p = into)
            {
                nint n = Libc.Read(fd, p, into.Length);
                return (int)n;
            }
        }
        finally
        {
            _ = Libc.Close(fd);
        }
    }

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int gettid();

    [DllImport("libc", EntryPoint = "getdents64")]
    private static extern nint getdents64(int fd, byte* buffer, nint count);
}
