using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Small buffered writes to regular files on a local disk whose file system refuses <c>RWF_NOWAIT</c> for them (ext4,
/// measured on Linux 6.18), done inline with plain <c>pwrite</c> under a guard per device.
/// </summary>
/// <remarks>
/// <para>A buffered write copies into the page cache and returns: microseconds. Sent to the thread pool instead (as
/// every ext4 write was), each costs a park, a pool hop and a wake: ASP.NET Core MVC spills a response past 32 KB to a
/// temporary file in /tmp (FileBufferingWriteStream) in ~170 small writes per 330 KB response, and its requests took
/// ~2× the CPU of plain Kestrel's, against level with it when that file was on tmpfs.</para>
/// <para>What such a write can still wait for: dirty-page throttling (the kernel makes a writer that dirties pages
/// faster than the disk takes them sleep in the call), the journal (a transaction that cannot start while a commit
/// is under way), reading the page a partial-page write lands in when it is not cached, another writer's inode lock.
/// No flag asks the kernel whether it would, so each inline write is timed, and the thread's voluntary context switches
/// counted across it: one that slept and took longer than <see cref="StallThreshold"/> (with no GC meanwhile) sends
/// the device's writes the usual way (thread pool, or released) for a back-off of
/// 1 s, doubled (up to 64 s) each time a write stalls again within a tenth of the back-off after it ended. Worst case,
/// per device and hub: one stall of however long the slow write took, then none until the back-off ends, and one each
/// time a back-off ends while the device is still slow.</para>
/// <para>Per device (<c>st_dev</c>): a journal, a queue and a disk are a file system's and a device's, so a slow disk
/// does not take inline writes away from another; the kernel's dirty limits are global as well as per device, so a
/// machine-wide throttle costs one stall per device written to.</para>
/// <para>Only local disk file systems (<see cref="IsLocalDiskFileSystem"/>): a network or FUSE file system's write may
/// wait for a server, for ever if it hangs, which no timing can take back.</para>
/// </remarks>
internal static unsafe partial class NoWaitFileIo
{
    /// <summary>The largest write done inline on a disk file: 64 KiB, ~10-30 µs of copying into the page cache.</summary>
    internal const int DiskWriteLimit = 64 * 1024;

    private const long Ext4Magic = 0xEF53; // ext2 and ext3 too
    private const long XfsMagic = 0x58465342;
    private const long BtrfsMagic = 0x9123683E;
    private const long F2fsMagic = 0xF2F52010;
    private const long OverlayMagic = 0x794C7630; // a container's root file system, over a local disk

    private const int AtEmptyPath = 0x1000;
    private const int StatxType = 0x1;
    private const int SIfMt = 0xF000;
    private const int SIfReg = 0x8000;

    private static readonly long StallThresholdDefault = Stopwatch.Frequency / 500; // 2 ms
    private static readonly ConcurrentDictionary<ulong, DiskWriteGuard> Guards = new();

    /// <summary>A disk write that took longer than this (in <see cref="Clock"/> ticks) stopped for something other than
    /// copying: 2 ms, the pool's own grace, and 100× what a 64 KiB copy takes. Tests set it to simulate a slow write.</summary>
    internal static long StallThreshold = StallThresholdDefault;

    /// <summary>Where inline disk writes and their guards read the time (<see cref="Stopwatch.GetTimestamp"/>); tests
    /// replace it to move time.</summary>
    internal static Func<long> Clock = Stopwatch.GetTimestamp;

    /// <summary>The calling thread's voluntary context switches so far (<c>getrusage(RUSAGE_THREAD)</c>'s
    /// <c>ru_nvcsw</c>, ~0.36 µs here), or -1 when unknown; tests replace it to make a write sleep.</summary>
    internal static Func<long> VoluntarySwitches = ReadVoluntarySwitches;

    /// <summary>Disk writes that slept and took longer than <see cref="StallThreshold"/> (each began a back-off, unless
    /// one was under way).</summary>
    internal static long DiskWriteStalls;

    /// <summary>Puts the stall threshold and the clock back, and ends every device's back-off (tests).</summary>
    internal static void ResetDiskWriteGuards()
    {
        StallThreshold = StallThresholdDefault;
        Clock = Stopwatch.GetTimestamp;
        VoluntarySwitches = ReadVoluntarySwitches;
        foreach (DiskWriteGuard guard in Guards.Values)
        {
            guard.Reset();
        }
    }

    /// <summary>Whether inline disk writes to <paramref name="handle"/>'s device are backed off at the moment (tests).</summary>
    internal static bool IsBackedOff(Microsoft.Win32.SafeHandles.SafeFileHandle handle) =>
        Handles.TryGetValue(handle, out HandleState? state) && state.Disk is { } guard && !guard.Allows(Clock());

    /// <summary>
    /// The rest of a write to a disk file (<see cref="HandleState.Disk"/>), from <paramref name="written"/> on, with plain
    /// <c>pwrite</c>, when it is small and the device is not backed off; the bytes written in all (the caller writes what
    /// is left the usual way). A write that took longer than <see cref="StallThreshold"/> backs the device off.
    /// </summary>
    private static int WriteToDisk(int fd, ReadOnlySpan<byte> buffer, long fileOffset, int written, DiskWriteGuard guard)
    {
        if (buffer.Length - written > DiskWriteLimit)
        {
            return written;
        }

        long start = Clock();
        if (!guard.Allows(start))
        {
            return written;
        }

        long sleeps = VoluntarySwitches();
        int collections = GC.CollectionCount(0);
        written = WritePlain(fd, buffer, fileOffset, written);
        long end = Clock();

        // Slow because the write slept in the kernel (a voluntary context switch: throttling, the journal, a page read, a
        // lock), not because this thread was preempted (involuntary) or waited for a GC: on a saturated server both
        // happen all the time, and counted as stalls they kept every device backed off (the ASP.NET repro went back to
        // 170 pool round trips per request under load).
        if (end - start > StallThreshold && (sleeps < 0 || VoluntarySwitches() != sleeps) && GC.CollectionCount(0) == collections)
        {
            guard.Stalled(end);
        }

        return written;
    }

    /// <summary>True for the local disk file systems whose buffered writes may go inline (ext2/3/4, XFS, btrfs, F2FS, and
    /// overlayfs over them). Not NFS, SMB, Ceph or FUSE (sshfs, a cloud bucket), whose writes may wait for a server.</summary>
    private static bool IsLocalDiskFileSystem(long type) =>
        type is Ext4Magic or XfsMagic or BtrfsMagic or F2fsMagic or OverlayMagic;

    /// <summary>The device (<c>st_dev</c>) of the descriptor's file when it is a regular file (not a device node, whose
    /// writes are a driver's); null otherwise, or without <c>statx</c> (a libc before glibc 2.28 or musl 1.2.5).</summary>
    private static ulong? RegularFileDevice(int fd)
    {
        // struct statx is 256 bytes, the same on every architecture: stx_mode is the u16 at 28, stx_dev_major and
        // stx_dev_minor the u32s at 136 and 140 (filled whatever the mask asks).
        byte* statx = stackalloc byte[256];
        try
        {
            byte empty = 0;
            if (Statx(fd, &empty, AtEmptyPath, StatxType, statx) != 0)
            {
                return null;
            }
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }

        ushort mode = *(ushort*)(statx + 28);
        if ((mode & SIfMt) != SIfReg)
        {
            return null;
        }

        return ((ulong)*(uint*)(statx + 136) << 32) | *(uint*)(statx + 140);
    }

    /// <summary>
    /// One device's inline-write back-off. Invariant: inline writes to the device are made only while
    /// <see cref="Allows"/> (the clock has passed the end of the last back-off).
    /// </summary>
    internal sealed class DiskWriteGuard
    {
        private static readonly long InitialBackOff = Stopwatch.Frequency; // 1 s
        private static readonly long MaxBackOff = 64 * Stopwatch.Frequency;

        private readonly object _gate = new();
        private long _until; // clock ticks: inline writes resume then (0: never backed off)
        private long _backOff; // the last back-off's length

        public static DiskWriteGuard For(ulong device) => Guards.GetOrAdd(device, static _ => new DiskWriteGuard());

        public bool Allows(long now) => now >= Volatile.Read(ref _until);

        /// <summary>A write to the device took too long; it ended at <paramref name="now"/>.</summary>
        public void Stalled(long now)
        {
            Interlocked.Increment(ref DiskWriteStalls);
            lock (_gate)
            {
                if (_until != 0 && now < _until)
                {
                    return; // already backed off: another hub's write stalled in the same spell
                }

                // Stalled again right after the last back-off ended (within a tenth of it): the device is still slow (the
                // dirty-page throttle pauses a busy writer every few writes), wait longer. Later, it is a stall of its own:
                // ext4's journal commits held writes of a loaded server for 7-12 ms every 1.7-4 s, and doubling on those
                // kept the device backed off for good.
                _backOff = _until != 0 && now - _until < _backOff / 10 ? Math.Min(2 * _backOff, MaxBackOff) : InitialBackOff;
                Volatile.Write(ref _until, now + _backOff);
            }
        }

        public void Reset()
        {
            lock (_gate)
            {
                _backOff = 0;
                Volatile.Write(ref _until, 0);
            }
        }
    }

    private static long ReadVoluntarySwitches()
    {
        if (IntPtr.Size != 8)
        {
            return -1;
        }

        // struct rusage on the 64-bit Linux ABIs: two timevals (32 bytes), then 14 longs, ru_nvcsw the 13th (offset 128).
        long* usage = stackalloc long[18];
        return GetRUsage(RUsageThread, usage) == 0 ? usage[16] : -1;
    }

    private const int RUsageThread = 1;

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRUsage(int who, long* usage);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static partial int Statx(int dirfd, byte* path, int flags, uint mask, byte* buffer);
}
