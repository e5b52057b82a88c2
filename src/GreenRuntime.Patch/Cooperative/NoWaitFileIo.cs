using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// File reads (and writes) that the kernel can complete without waiting, done inline on the greenlet: Linux's
/// <c>preadv2</c>/<c>pwritev2</c> with <c>RWF_NOWAIT</c>. A read of data in the page cache then costs one system
/// call instead of a thread-pool round trip; only what would wait for the disk goes to the thread pool.
/// </summary>
/// <remarks>
/// <para>What <c>RWF_NOWAIT</c> promises (Linux ≥ 4.14): the call returns <c>EAGAIN</c> instead of waiting for I/O
/// or for a lock; a read copies what is cached and stops at the first page that is not (a short count), or fails
/// with <c>EAGAIN</c> if the first one is not. <c>EOPNOTSUPP</c> means the file (its filesystem, or a device) does
/// not support it: measured on Linux 6.18, ext4 supports it for reads but not for buffered writes, and tmpfs for
/// neither. <c>ENOSYS</c> means the kernel lacks <c>preadv2</c>. Both are remembered (EOPNOTSUPP per handle, and
/// for the process once 64 handles refused while none succeeded; ENOSYS for the process).</para>
/// <para>Exactly the original's semantics: the fast path is taken only where the original would call
/// <c>pread</c>/<c>pwrite</c> at the given offset (a seekable handle, <c>SupportsRandomAccess</c>; a non-negative
/// offset), so the kernel's file offset is untouched like the original's, and FileStream's own position tracking
/// sees the same counts. A short read is completed (inline while the kernel has the data, else on the thread pool)
/// so that the caller gets what one <c>pread</c> of a regular file returns: everything up to the end of the file
/// (a read that stops inside a page has reached the end: uncached data starts on a page boundary).
/// Any other error is not reported from here: the caller then runs the original on the thread pool, which raises
/// the original's exception.</para>
/// <para>Writes are attempted inline only on handles opened without <c>O_SYNC</c>/<c>O_DSYNC</c> (a synchronous
/// write would wait for the disk inside the call), with <c>RWF_NOWAIT</c> where the filesystem accepts it for
/// buffered writes (XFS and btrfs on recent kernels). A regular file on a local disk whose filesystem refuses it
/// (ext4) is written with plain <c>pwrite</c> up to <see cref="DiskWriteLimit"/>, each write timed, under a back-off
/// per device after one that stalled (NoWaitFileIo.Disk.cs).</para>
/// <para>Reads and writes larger than <see cref="InlineLimit"/> always go to the thread pool: even from the page
/// cache, copying megabytes holds the hub for a visible time.</para>
/// <para>A file whose file system keeps it in memory and nowhere else (tmpfs, ramfs: <c>/dev/shm</c>, <c>/run</c>,
/// a container's memory-backed volume) refuses <c>RWF_NOWAIT</c>, yet none of its calls waits for a device: its
/// pages are the file. Such a handle, found by <c>fstatfs</c> when it first refuses, is read and written inline
/// with plain <c>pread</c>/<c>pwrite</c> (within the same size limit), as cached data on other file systems is.
/// What such a call can still wait for is memory reclaim or another writer's inode lock, which the blocking
/// monitor sees like any other stall of the hub. procfs refuses it too, and its files are made by the kernel as
/// they are read, from memory: they are read inline the same way (<c>Process.GetProcesses()</c> reads a few per
/// process; with each process's name, over 71 processes: 23–31 ms through the thread pool, 9 ms inline, 7 ms on a
/// thread). The one procfs file that waits, <c>/proc/kmsg</c> (root only), would hold the hub until the kernel logs
/// something.</para>
/// </remarks>
internal static unsafe partial class NoWaitFileIo
{
    /// <summary>The largest read or write tried inline: 256 KiB, ~20-40 µs of copying from the page cache.</summary>
    internal const int InlineLimit = 256 * 1024;

    private const int RwfNoWait = 0x8;
    internal const int EIntr = 4;
    internal const int EAgain = 11;
    internal const int ENoSys = 38;
    internal const int EOpNotSupp = 95;
    private const int FGetFl = 3;
    private const int OSync = 0x101000; // O_SYNC includes O_DSYNC (0x1000) on Linux
    private const int ODSync = 0x1000;

    // O_DIRECT differs between architectures (asm-generic: 0x4000).
    private static readonly int ODirect = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.Arm64 or Architecture.Arm or Architecture.Armv6 => 0x10000,
        Architecture.Ppc64le => 0x20000,
        _ => 0x4000,
    };
    private const long TmpfsMagic = 0x01021994;
    private const long RamfsMagic = 0x858458f6; // the kernel widens the unsigned constant: no sign extension
    private const long ProcMagic = 0x9fa0;

    private static readonly int PageSize = Environment.SystemPageSize;
    private static readonly ConditionalWeakTable<SafeFileHandle, HandleState> Handles = new();

    /// <summary>SafeFileHandle's internal "the original uses pread/pwrite" flag, or null if this runtime has none.</summary>
    internal static readonly Func<SafeFileHandle, bool>? SupportsRandomAccess =
        typeof(SafeFileHandle).GetProperty("SupportsRandomAccess", BindingFlags.NonPublic | BindingFlags.Instance)?.GetMethod?.CreateDelegate<Func<SafeFileHandle, bool>>();

    private static readonly bool Unavailable = !OperatingSystem.IsLinux() || SupportsRandomAccess is null;

    // No RWF_NOWAIT calls any more (the kernel or libc lacks them, or every handle refused): in-memory files are
    // still found, by one fstatfs per call on a handle with no state.
    private static volatile bool readsGivenUp;
    private static volatile bool writesGivenUp;

    /// <summary>
    /// After this many handles answered EOPNOTSUPP while none ever succeeded, the process stops trying (every new
    /// handle would otherwise cost a wasted system call and a table entry: an application whose files are all on
    /// a filesystem without NOWAIT writes, such as ext4, opens a new handle per File.WriteAllText).
    /// </summary>
    private const int RefusalsBeforeGivingUp = 64;

    private static int readRefusals;
    private static int writeRefusals;
    private static volatile bool readSucceeded;
    private static volatile bool writeSucceeded;

    /// <summary>What one handle does not support (the state exists only once something was found out).</summary>
    private sealed class HandleState
    {
        public volatile bool NoReads;
        public volatile bool NoWrites;
        public volatile bool InMemory; // tmpfs, ramfs or procfs: plain pread/pwrite never wait for a device

        // A regular file on a local disk whose buffered writes refuse RWF_NOWAIT (ext4), opened without O_SYNC,
        // O_DSYNC or O_DIRECT: small writes are plain pwrites under its device's guard (NoWaitFileIo.Disk.cs).
        public volatile DiskWriteGuard? Disk;
        public int OpenFlags = -1; // F_GETFL, read at the first inline write
    }

    /// <summary>
    /// When false, nothing is tried inline (every call goes the thread-pool way); tests use it to compare the two
    /// paths and to exercise the thread-pool path on cached files.
    /// </summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>
    /// Reads inline as much of <paramref name="buffer"/> at <paramref name="fileOffset"/> as the kernel has cached.
    /// </summary>
    /// <returns>True if the read is complete (<paramref name="read"/> is the whole buffer, or all up to the end of
    /// the file): return it. False: <paramref name="read"/> bytes are in the buffer and the rest must be read the
    /// usual way, at <c>fileOffset + read</c>.</returns>
    public static bool TryRead(SafeFileHandle handle, Span<byte> buffer, long fileOffset, out int read)
    {
        read = 0;
        if (!Applies(handle, buffer.Length, fileOffset, out HandleState? state))
        {
            return false;
        }

        try
        {
            using var lease = new FdLease(handle);
            int fd = lease.Fd;
            if (state is null && readsGivenUp)
            {
                state = PlainState(handle, fd, writes: false);
            }

            if (state?.InMemory == true)
            {
                return ReadInMemory(fd, buffer, fileOffset, ref read);
            }

            if (state?.NoReads == true || readsGivenUp)
            {
                return false;
            }

            fixed (byte* start = buffer)
            {
                while (read < buffer.Length)
                {
                    var iov = new IoVector { Base = start + read, Length = buffer.Length - read };
                    nint n = PReadV2(fd, &iov, 1, fileOffset + read, RwfNoWait);
                    if (n > 0)
                    {
                        readSucceeded = true;
                        read += (int)n;
                        if (read < buffer.Length && ((fileOffset + read) & (PageSize - 1)) != 0)
                        {
                            // A NOWAIT read stops early at the end of the file or at the first page that is not
                            // cached, which begins on a page boundary: stopping inside a page means the end of the
                            // file, so no second call is needed to find out (a small file costs one call).
                            return true;
                        }

                        continue;
                    }

                    if (n == 0)
                    {
                        readSucceeded = true;
                        return true; // end of file
                    }

                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == EIntr)
                    {
                        continue;
                    }

                    if (Remember(handle, fd, errno, reads: true) is not null)
                    {
                        return ReadInMemory(fd, buffer, fileOffset, ref read);
                    }

                    return false;
                }

                return true;
            }
        }
        catch (EntryPointNotFoundException)
        {
            readsGivenUp = true; // a libc without preadv2
            return false;
        }
    }

    /// <summary>
    /// Writes inline as much of <paramref name="buffer"/> at <paramref name="fileOffset"/> as the kernel accepts
    /// without waiting; returns how many bytes that was (the caller writes the rest the usual way).
    /// </summary>
    public static int TryWrite(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset)
    {
        if (!Applies(handle, buffer.Length, fileOffset, out HandleState? state))
        {
            return 0;
        }

        int written = 0;
        try
        {
            using var lease = new FdLease(handle);
            int fd = lease.Fd;
            if (state is null && writesGivenUp)
            {
                state = PlainState(handle, fd, writes: true);
            }

            if (state?.InMemory == true)
            {
                return WritePlain(fd, buffer, fileOffset, written);
            }

            if (state?.Disk is { } guard)
            {
                return WriteToDisk(fd, buffer, fileOffset, written, guard);
            }

            if (state?.NoWrites == true || writesGivenUp)
            {
                return 0;
            }

            state ??= Handles.GetValue(handle, static _ => new HandleState());

            if (state.OpenFlags < 0)
            {
                state.OpenFlags = Fcntl(fd, FGetFl);
            }

            if (state.OpenFlags < 0 || (state.OpenFlags & (OSync | ODSync)) != 0)
            {
                state.NoWrites = true; // synchronous writes wait for the disk inside the call
                return 0;
            }

            written = WriteNoWait(fd, buffer, fileOffset, out int errno);
            if (written > 0)
            {
                writeSucceeded = true;
            }

            if (errno != 0 && Remember(handle, fd, errno, reads: false) is { } plain)
            {
                return plain.Disk is { } disk
                    ? WriteToDisk(fd, buffer, fileOffset, written, disk)
                    : WritePlain(fd, buffer, fileOffset, written);
            }

            return written;
        }
        catch (EntryPointNotFoundException)
        {
            writesGivenUp = true;
            return written;
        }
    }

    /// <summary>
    /// One <c>preadv2(..., RWF_NOWAIT)</c> into <paramref name="buffer"/> (EINTR retried): the bytes read (0 at the end of
    /// the stream), or -1 with <paramref name="errno"/> (EAGAIN: it would wait). A negative <paramref name="fileOffset"/>
    /// reads at the descriptor's own position. Throws <see cref="EntryPointNotFoundException"/> without preadv2.
    /// </summary>
    internal static int ReadNoWait(int fd, Span<byte> buffer, long fileOffset, out int errno)
    {
        fixed (byte* start = buffer)
        {
            var iov = new IoVector { Base = start, Length = buffer.Length };
            while (true)
            {
                nint n = PReadV2(fd, &iov, 1, fileOffset < 0 ? -1 : fileOffset, RwfNoWait);
                errno = n >= 0 ? 0 : Marshal.GetLastPInvokeError();
                if (errno != EIntr) return n >= 0 ? (int)n : -1;
            }
        }
    }

    /// <summary>
    /// <c>pwritev2(..., RWF_NOWAIT)</c> until <paramref name="buffer"/> is written, the kernel would wait, or the call
    /// fails: returns the bytes written, with <paramref name="errno"/> of the call that stopped short (EAGAIN: it would
    /// wait; 0 when everything was written). A negative <paramref name="fileOffset"/> writes at the descriptor's own
    /// position (a pipe, a socket, the console). Throws <see cref="EntryPointNotFoundException"/> without pwritev2.
    /// </summary>
    internal static int WriteNoWait(int fd, ReadOnlySpan<byte> buffer, long fileOffset, out int errno)
    {
        int written = 0;
        fixed (byte* start = buffer)
        {
            while (written < buffer.Length)
            {
                var iov = new IoVector { Base = start + written, Length = buffer.Length - written };
                nint n = PWriteV2(fd, &iov, 1, fileOffset < 0 ? -1 : fileOffset + written, RwfNoWait);
                if (n > 0)
                {
                    written += (int)n;
                    continue;
                }

                errno = n == 0 ? EAgain : Marshal.GetLastPInvokeError();
                if (errno != EIntr)
                {
                    return written;
                }
            }
        }

        errno = 0;
        return written;
    }

    /// <summary>True where the original would pread/pwrite at this offset and the call is small enough to do inline.</summary>
    private static bool Applies(SafeFileHandle handle, int length, long fileOffset, out HandleState? state)
    {
        state = null;
        if (Unavailable || !Enabled || length == 0 || length > InlineLimit || fileOffset < 0 || handle.IsInvalid || handle.IsClosed)
        {
            return false;
        }

        // The original's choice between pread and read (a pipe or a terminal is not seekable); asking it may cost
        // the original's own lseek once per handle.
        if (!SupportsRandomAccess!(handle))
        {
            return false;
        }

        _ = Handles.TryGetValue(handle, out state);
        return true;
    }

    /// <summary>Records what an error says of the handle or the process; the handle's state when the call goes on with
    /// plain <c>pread</c>/<c>pwrite</c> (its file lives in memory only, or, for a write, it is a regular file on a local
    /// disk: see <see cref="PlainState"/>), else null.</summary>
    private static HandleState? Remember(SafeFileHandle handle, int fd, int errno, bool reads)
    {
        if (errno == ENoSys)
        {
            readsGivenUp = true;
            writesGivenUp = true;
        }
        else if (errno == EOpNotSupp)
        {
            HandleState? plain = PlainState(handle, fd, writes: !reads);
            if (plain?.InMemory == true)
            {
                return plain; // no refusal counted: files elsewhere may still take RWF_NOWAIT
            }

            // A disk file written plain is still a refusal: giving up saves the RWF_NOWAIT attempt per new handle.
            HandleState state = plain ?? Handles.GetValue(handle, static _ => new HandleState());

            if (reads)
            {
                state.NoReads = true;
                if (Interlocked.Increment(ref readRefusals) >= RefusalsBeforeGivingUp && !readSucceeded)
                {
                    readsGivenUp = true;
                }
            }
            else
            {
                state.NoWrites = true;
                if (Interlocked.Increment(ref writeRefusals) >= RefusalsBeforeGivingUp && !writeSucceeded)
                {
                    writesGivenUp = true;
                }
            }

            return state.Disk is not null ? state : null;
        }

        // EAGAIN: not cached (or a lock is held) this time; anything else: the original will report it.
        return null;
    }

    /// <summary>
    /// The rest of a read of an in-memory file, from <paramref name="read"/> on: plain <c>pread</c> (EINTR retried) until
    /// the buffer is full or the file ends. False, with <paramref name="read"/> what was read, when a call fails: the
    /// caller reads the rest the usual way, and the original reports the error.
    /// </summary>
    private static bool ReadInMemory(int fd, Span<byte> buffer, long fileOffset, ref int read)
    {
        fixed (byte* start = buffer)
        {
            while (read < buffer.Length)
            {
                nint n = PRead(fd, start + read, buffer.Length - read, fileOffset + read);
                if (n > 0)
                {
                    read += (int)n;
                    continue;
                }

                if (n == 0) return true;
                if (Marshal.GetLastPInvokeError() != EIntr) return false;
            }

            return true;
        }
    }

    /// <summary>The rest of a write, from <paramref name="written"/> on, with plain <c>pwrite</c> (EINTR retried);
    /// returns the bytes written in all (the caller writes what is left the usual way, and the original reports an
    /// error).</summary>
    private static int WritePlain(int fd, ReadOnlySpan<byte> buffer, long fileOffset, int written)
    {
        fixed (byte* start = buffer)
        {
            while (written < buffer.Length)
            {
                nint n = PWrite(fd, start + written, buffer.Length - written, fileOffset + written);
                if (n > 0)
                {
                    written += (int)n;
                }
                else if (n == 0 || Marshal.GetLastPInvokeError() != EIntr)
                {
                    return written;
                }
            }

            return written;
        }
    }

    /// <summary>
    /// The handle's state when its calls can go on with plain <c>pread</c>/<c>pwrite</c>: marked in memory when its file
    /// is on tmpfs, ramfs or procfs (reads and writes); for a write, given its device's guard when it is a regular file
    /// on a local disk file system (<see cref="IsLocalDiskFileSystem"/>) opened without <c>O_SYNC</c>, <c>O_DSYNC</c> or
    /// <c>O_DIRECT</c>, whose writes wait for the device inside the call. Otherwise null; nothing is recorded for a
    /// file elsewhere (the process gave up on RWF_NOWAIT, and a table entry per handle is what giving up saves), and a
    /// local disk file that must not be written inline is marked so, which saves asking again at every call.
    /// </summary>
    private static HandleState? PlainState(SafeFileHandle handle, int fd, bool writes)
    {
        long type = FileSystemType(fd);
        if (type is TmpfsMagic or RamfsMagic or ProcMagic)
        {
            HandleState memory = Handles.GetValue(handle, static _ => new HandleState());
            memory.InMemory = true;
            return memory;
        }

        if (!writes || !IsLocalDiskFileSystem(type))
        {
            return null;
        }

        HandleState state = Handles.GetValue(handle, static _ => new HandleState());
        if (state.OpenFlags < 0)
        {
            state.OpenFlags = Fcntl(fd, FGetFl);
        }

        if (state.OpenFlags < 0 || (state.OpenFlags & (OSync | ODSync | ODirect)) != 0 || RegularFileDevice(fd) is not { } device)
        {
            state.NoWrites = true;
            return null;
        }

        state.Disk = DiskWriteGuard.For(device);
        return state;
    }

    /// <summary>The descriptor's file system type (<c>statfs</c>'s <c>f_type</c>), 0 when unknown. tmpfs and ramfs files
    /// are memory and nothing else; procfs files the kernel writes as they are read.</summary>
    private static long FileSystemType(int fd)
    {
        if (IntPtr.Size != 8)
        {
            return 0; // f_type is read as the 64-bit ABIs' leading long
        }

        // struct statfs is 120 bytes on the 64-bit Linux ABIs (glibc and musl alike), f_type its first field.
        long* statfs = stackalloc long[32];
        return FStatFs(fd, statfs) == 0 ? statfs[0] : 0;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVector
    {
        public byte* Base;
        public nint Length;
    }

    [LibraryImport("libc", EntryPoint = "preadv2", SetLastError = true)]
    private static partial nint PReadV2(int fd, IoVector* iov, int count, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "pwritev2", SetLastError = true)]
    private static partial nint PWriteV2(int fd, IoVector* iov, int count, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint PRead(int fd, byte* buffer, nint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    private static partial nint PWrite(int fd, byte* buffer, nint count, long offset);

    [LibraryImport("libc", EntryPoint = "fstatfs", SetLastError = true)]
    private static partial int FStatFs(int fd, long* buffer);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command);
}
