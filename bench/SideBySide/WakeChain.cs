// The floor of the stackful sleeper rows: a wake chain through N parked threads.
//
// A suspended stackful greenlet keeps a parked thread, and the hub resumes one greenlet at a time, so resuming N of
// them takes at least N thread wakes one after another. This worker measures that alone, with nothing else on the
// path: N threads each park on a futex word of their own (the raw system call, as a carrier parks); the first is
// woken, and each one, woken, wakes the next and parks again. A hop is one futex wake and one context switch, the least
// a resume can cost on this kernel. "pinned" keeps every thread on one CPU, as HubOptions.PinCarriersToOneCpu does for
// a hub's carriers; otherwise the kernel places them, and a wake may have to rouse the other CPU first.

using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.SideBySide;

internal static unsafe class WakeChain
{
    private const int FutexWaitPrivate = 128, FutexWakePrivate = 129;
    private const int WordStride = 16; // ints: one futex word per cache line

    private static int* s_words;
    private static int* s_released;
    private static int s_count, s_parked;
    private static long s_endTicks;

    public static Dictionary<string, double> Run(int threads, bool pinned)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new PlatformNotSupportedException("The wake chain calls the x64 Linux futex system call directly.");
        if (threads < 2) throw new ArgumentOutOfRangeException(nameof(threads), threads, "A chain needs at least 2 threads.");
        s_count = threads;
        s_words = (int*)NativeMemory.AllocZeroed((nuint)threads * WordStride * sizeof(int));
        s_released = (int*)NativeMemory.AllocZeroed(sizeof(int));
        var mask = stackalloc ulong[16];
        bool restoreMask = pinned && SchedGetAffinity(0, 128, mask) == 0;
        if (pinned)
        {
            var cpu0 = stackalloc ulong[16];
            cpu0[0] = 1;
            if (SchedSetAffinity(0, 128, cpu0) != 0) throw new InvalidOperationException("sched_setaffinity refused CPU 0.");
        }
        try
        {
            for (int i = 0; i < threads; i++) Start(i); // a new thread inherits its creator's CPU mask
        }
        finally
        {
            if (restoreMask) SchedSetAffinity(0, 128, mask);
        }
        while (Volatile.Read(ref s_parked) < threads) Thread.Sleep(1);
        Thread.Sleep(200); // every thread asleep in the kernel, not on its way there

        long start = Stopwatch.GetTimestamp();
        Wake(&s_words[0]);
        while (Volatile.Read(ref s_endTicks) == 0) Thread.Sleep(1);
        double seconds = (s_endTicks - start) / (double)Stopwatch.Frequency;

        Volatile.Write(ref *s_released, 1);
        Futex(s_released, FutexWakePrivate, int.MaxValue);
        return new()
        {
            ["threads"] = threads,
            ["pinned"] = pinned ? 1 : 0,
            ["chain_s"] = seconds,
            ["us_per_hop"] = seconds * 1e6 / threads,
        };
    }

    private static void Start(int index)
    {
        // Thread.Start returns once the thread runs, so creating 10,000 takes a second or two, all before the timing.
        var thread = new Thread(() => Body(index), 256 * 1024) { IsBackground = true };
        thread.UnsafeStart();
    }

    private static void Body(int index)
    {
        int* word = &s_words[index * WordStride];
        Interlocked.Increment(ref s_parked);
        WaitFor(word);
        if (index + 1 < s_count) Wake(&s_words[(index + 1) * WordStride]);
        else Volatile.Write(ref s_endTicks, Stopwatch.GetTimestamp());
        WaitFor(s_released); // parked again, as a carrier is once it has handed the baton on
    }

    private static void WaitFor(int* word)
    {
        while (Volatile.Read(ref *word) == 0) Futex(word, FutexWaitPrivate, 0);
    }

    private static void Wake(int* word)
    {
        Volatile.Write(ref *word, 1);
        Futex(word, FutexWakePrivate, 1);
    }

    private static long Futex(int* word, int op, int value) => Syscall(202 /* SYS_futex on x64 */, word, op, value, null, null, 0);

    // glibc's syscall() moves its integer arguments into the system call's registers, so a fixed prototype is safe.
    [DllImport("libc", EntryPoint = "syscall")]
    private static extern long Syscall(long number, int* word, int op, int value, void* timeout, int* word2, int value3);

    [DllImport("libc", EntryPoint = "sched_getaffinity")]
    private static extern int SchedGetAffinity(int pid, nint size, ulong* mask);

    [DllImport("libc", EntryPoint = "sched_setaffinity")]
    private static extern int SchedSetAffinity(int pid, nint size, ulong* mask);
}
