using System.Reflection;
using GreenRuntime.Scheduling;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Synchronous file reads, writes and syncs on a greenlet, at the funnels every FileStream, File.* and RandomAccess
/// call on Unix goes through (RandomAccess.ReadAtOffset/WriteAtOffset and their vectored forms, and
/// FileStreamHelpers.FlushToDisk for FileStream.Flush(true) and RandomAccess.FlushToDisk): what the kernel
/// can do without waiting (data in the page cache; a small buffered write to a local disk's file, timed, under a
/// back-off per device after one that stalled) is done inline with one system call (<see cref="NoWaitFileIo"/>);
/// the rest runs on a thread-pool thread while only the greenlet waits, or, on a seekable file when the pool has no
/// thread to spare, on the greenlet's own thread with the hub's baton released (<see cref="PoolClaim"/>).
/// </summary>
/// <remarks>
/// <para>Measured with examples/HttpServer under wrk (a 20 ms sleep and a 1 KB file read per request, 1,000
/// connections): ~3.7 k req/s with every read sent to the thread pool, ~11 k with the cached read inline
/// (docs/patching.md); a cached 1 KB read on a greenlet costs 1.5x a plain pread instead of ~40x.</para>
/// <para>Spans cannot travel to another thread. Up to <see cref="BounceLimit"/> bytes go through a pooled
/// private buffer; larger spans are pinned and the pool thread works on the caller's memory directly (a seekable file's
/// call is shielded, so the frame outlives it). A pipe's, FIFO's or terminal's call never goes to the pool: it waits on
/// the hub's reactor and then makes a call that does not wait (<see cref="UnseekableFileIo"/>), so a kill leaves nothing
/// running.</para>
/// <para>A call that goes to the thread pool pays a round trip (microseconds); that is the price of never stalling
/// the hub on a cold disk. A call done inline does not park, so a kill or timeout that arrives meanwhile is raised
/// at the greenlet's next blocking call, as after any call that did not need to wait. So is one that arrives while a
/// regular file's call waits, or that is already pending: such a call ends by itself, and on a thread nothing
/// interrupts it, so code that unwinds from a kill and must write (a stream's flush in <c>Dispose</c>, a database
/// file's rollback) does so as on a thread. Raised there, the kill (level-triggered, docs/core.md) failed every write
/// of the cleanup: an embedded database lost its rollback and stayed locked. A pipe's or a terminal's call waits for
/// the other side, for ever perhaps, so it stays a cancellation point. The vectored forms
/// (ReadScatter/WriteGather, reached only through the public RandomAccess overloads that take lists of buffers)
/// never go inline; they are offered to the pool like the rest.</para>
/// </remarks>
internal static unsafe class CooperativeFile
{
    internal const int BounceLimit = 1 << 20;

    internal delegate int ReadFn(SafeFileHandle handle, Span<byte> buffer, long fileOffset);
    internal delegate void WriteFn(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset);
    internal delegate long ReadScatterFn(SafeFileHandle handle, IReadOnlyList<Memory<byte>> buffers, long fileOffset);
    internal delegate void WriteGatherFn(SafeFileHandle handle, IReadOnlyList<ReadOnlyMemory<byte>> buffers, long fileOffset);

    internal static readonly MethodInfo? ReadAtOffsetMethod = Find("ReadAtOffset", typeof(SafeFileHandle), typeof(Span<byte>), typeof(long));
    internal static readonly MethodInfo? WriteAtOffsetMethod = Find("WriteAtOffset", typeof(SafeFileHandle), typeof(ReadOnlySpan<byte>), typeof(long));
    internal static readonly MethodInfo? ReadScatterAtOffsetMethod = Find("ReadScatterAtOffset", typeof(SafeFileHandle), typeof(IReadOnlyList<Memory<byte>>), typeof(long));
    internal static readonly MethodInfo? WriteGatherAtOffsetMethod = Find("WriteGatherAtOffset", typeof(SafeFileHandle), typeof(IReadOnlyList<ReadOnlyMemory<byte>>), typeof(long));

    internal static readonly OriginalSlot<ReadFn> ReadAt = new(Direct<ReadFn>(ReadAtOffsetMethod), RawFileIo.ReadAtOffset);
    internal static readonly OriginalSlot<WriteFn> WriteAt = new(Direct<WriteFn>(WriteAtOffsetMethod));
    internal static readonly OriginalSlot<ReadScatterFn> ReadScatter = new(Direct<ReadScatterFn>(ReadScatterAtOffsetMethod));
    internal static readonly OriginalSlot<WriteGatherFn> WriteGather = new(Direct<WriteGatherFn>(WriteGatherAtOffsetMethod));

    /// <summary>The Unix funnel of every managed fsync: <c>FileStream.Flush(true)</c> (through the strategies'
    /// <c>Flush(bool)</c>) and <c>RandomAccess.FlushToDisk</c>. Its P/Invoke, <c>Interop.Sys.FSync</c>, is called from
    /// here only.</summary>
    internal static readonly MethodInfo? FlushToDiskMethod = typeof(RandomAccess).Assembly.GetType("System.IO.Strategies.FileStreamHelpers")
        ?.GetMethod("FlushToDisk", BindingFlags.NonPublic | BindingFlags.Static, [typeof(SafeFileHandle)]);

    internal static readonly OriginalSlot<Action<SafeFileHandle>> FlushToDiskSlot =
        new(FlushToDiskMethod?.CreateDelegate<Action<SafeFileHandle>>() ?? (_ => throw new MissingMethodException(
            "System.IO.Strategies.FileStreamHelpers has no internal method FlushToDisk(SafeFileHandle) in this runtime; FileStream.Flush(true) is not patched here.")));

    public static int ReadAtOffset(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || buffer.IsEmpty) return ReadAt.Call(handle, buffer, fileOffset);
        ReadPoint(handle);
        if (NoWaitFileIo.TryRead(handle, buffer, fileOffset, out int inline)) return inline;
        // Not (all) cached, or not a file the kernel can read without waiting: the rest as the original would.
        return inline + ReadOffloaded(hub, handle, buffer[inline..], fileOffset + inline);
    }

    /// <summary>
    /// Where a read starts: it gives way (a loop of reads the page cache answers never parks), and only a pipe's, FIFO's
    /// or terminal's read raises a kill or timeout not raised yet (<see cref="Parking.YieldPoint"/>), since it may wait
    /// for ever. A regular file's read ends by itself and is no cancellation point, as on a thread and in gevent, whose
    /// file reads nothing interrupts: libraries read a structure in several calls and keep state across them. Lucene
    /// fills its read buffer in chunks and updates the buffer's bounds only after the last: a kill raised at a later
    /// chunk left a half-overwritten buffer behind, and a kill at a read inside a flush aborted the flush, which
    /// throws away every document buffered with it (63–74 % of the documents added under random kills were lost;
    /// none, or as many as on threads, since).
    /// </summary>
    private static void ReadPoint(SafeFileHandle handle)
    {
        if (Parking.CancellationPending && !IsBounded(handle)) Parking.YieldPoint();
        else Parking.GiveWay();
    }

    public static void WriteAtOffset(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || buffer.IsEmpty)
        {
            WriteAt.Call(handle, buffer, fileOffset);
            return;
        }
        Parking.GiveWay(); // no cancellation point: see GiveWay
        CooperativeFileClose.NoteWritten(handle, fileOffset, buffer.Length); // its close may flush what it wrote
        int inline = NoWaitFileIo.TryWrite(handle, buffer, fileOffset);
        if (inline < buffer.Length) WriteOffloaded(hub, handle, buffer[inline..], fileOffset + inline);
    }

    /// <summary>
    /// Replaces <c>FileStreamHelpers.FlushToDisk(SafeFileHandle)</c> (Unix): the original's <c>fsync</c> runs the way a
    /// write that must wait runs, on the thread pool or released (<see cref="Offload"/>), since it waits for the disk to
    /// take every dirty page of the file (30–60 ms for 64 MiB on this VM, during which the hub ran nothing). It is no
    /// cancellation point either: a kill or timeout that comes meanwhile is raised at the greenlet's next blocking point,
    /// so a sync that happened (a commit made durable) is never reported as failed. A pipe's, socket's or terminal's
    /// <c>fsync</c> fails at once (and the original ignores that), so it runs inline.
    /// </summary>
    public static void FlushToDisk(SafeFileHandle handle)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !IsBounded(handle))
        {
            FlushToDiskSlot.Call(handle);
            return;
        }
        Parking.GiveWay();
        using var shield = Green.Shield();
        Offload(hub, PoolClaim.Offer(), s_flushToDisk, handle, write: true);
    }

    private static readonly Func<SafeFileHandle, bool> s_flushToDisk = static handle =>
    {
        FlushToDiskSlot.Call(handle);
        return true;
    };

    /// <summary>The original read while the greenlet waits: on a thread-pool thread, or released when the pool is late
    /// (see <see cref="PoolClaim"/>).</summary>
    private static int ReadOffloaded(Hub hub, SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        bool bounded = IsBounded(handle);
        if (!bounded && UnseekableFileIo.Applies) return UnseekableFileIo.Read(handle, buffer, fileOffset);
        using var shield = bounded ? Green.Shield() : default;
        int length = buffer.Length;
        var claim = bounded ? PoolClaim.Offer() : null;
        if (claim == PoolClaim.Late) return ReadReleased(handle, buffer, fileOffset);
        if (length <= BounceLimit)
        {
            var bounce = IoBuffers.Pool.Rent(length);
            var task = Task.Run(() => claim is null || claim.PoolStarts() ? ReadAt.Call(handle, bounce.AsSpan(0, length), fileOffset) : 0);
            if (!PoolClaim.Wait(hub, task, claim, WaitReason.File)) // a kill abandons the bounce buffer to the GC
            {
                IoBuffers.Pool.Return(bounce);
                return ReadReleased(handle, buffer, fileOffset);
            }
            try
            {
                int read = task.GetAwaiter().GetResult();
                bounce.AsSpan(0, read).CopyTo(buffer);
                return read;
            }
            finally
            {
                IoBuffers.Pool.Return(bounce);
            }
        }
        fixed (byte* pinned = buffer) // a seekable file's call is shielded, so the frame outlives it
            return Offload(hub, claim, s_readReleased, (handle, (nint)pinned, length, fileOffset), write: false);
    }

    /// <summary>The original write while the greenlet waits: on a thread-pool thread, or released when the pool is late
    /// (see <see cref="PoolClaim"/>).</summary>
    private static void WriteOffloaded(Hub hub, SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset)
    {
        bool bounded = IsBounded(handle);
        if (!bounded && UnseekableFileIo.Applies)
        {
            UnseekableFileIo.Write(handle, buffer, fileOffset);
            return;
        }
        using var shield = bounded ? Green.Shield() : default;
        int length = buffer.Length;
        var claim = bounded ? PoolClaim.Offer() : null;
        if (claim == PoolClaim.Late)
        {
            WriteReleased(handle, buffer, fileOffset);
            return;
        }
        if (length <= BounceLimit)
        {
            var bounce = IoBuffers.Pool.Rent(length);
            buffer.CopyTo(bounce);
            var task = Task.Run(() =>
            {
                if (claim is null || claim.PoolStarts()) WriteAt.Call(handle, bounce.AsSpan(0, length), fileOffset);
            });
            if (!PoolClaim.Wait(hub, task, claim, WaitReason.File))
            {
                IoBuffers.Pool.Return(bounce);
                WriteReleased(handle, buffer, fileOffset);
                return;
            }
            try
            {
                task.GetAwaiter().GetResult();
            }
            finally
            {
                IoBuffers.Pool.Return(bounce);
            }
            return;
        }
        fixed (byte* pinned = buffer)
            Offload(hub, claim, s_writeReleased, (handle, (nint)pinned, length, fileOffset), write: true);
    }

    private static readonly Func<(SafeFileHandle Handle, nint Buffer, int Length, long Offset), int> s_readReleased =
        static s => ReadAt.Call(s.Handle, new Span<byte>((void*)s.Buffer, s.Length), s.Offset);

    private static readonly Func<(SafeFileHandle Handle, nint Buffer, int Length, long Offset), bool> s_writeReleased = static s =>
    {
        WriteAt.Call(s.Handle, new ReadOnlySpan<byte>((void*)s.Buffer, s.Length), s.Offset);
        return true;
    };

    /// <summary>Whether a call on <paramref name="handle"/> ends by itself: a seekable file's does, a pipe's or a
    /// terminal's waits for the other side. Such a call may be taken back from the pool (<see cref="PoolClaim"/>), and
    /// it is no cancellation point (see the class remarks).</summary>
    private static bool IsBounded(SafeFileHandle handle) =>
        NoWaitFileIo.SupportsRandomAccess is { } seekable && seekable(handle);

    /// <summary>The original read on the greenlet's own thread with the baton released.</summary>
    private static int ReadReleased(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        fixed (byte* pinned = buffer) // the released call runs on this very thread, inside this frame
            return PoolClaim.RunReleased(s_readReleased, (handle, (nint)pinned, buffer.Length, fileOffset), WaitReason.File);
    }

    /// <summary>The original write on the greenlet's own thread with the baton released. Not a cancellation point: a
    /// kill that arrives meanwhile is raised at the greenlet's next blocking call, so a write that happened is never
    /// reported as failed (FileStream would not advance its position past bytes that are in the file).</summary>
    private static void WriteReleased(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset)
    {
        fixed (byte* pinned = buffer)
            PoolClaim.RunReleased(s_writeReleased, (handle, (nint)pinned, buffer.Length, fileOffset), WaitReason.File, cancellationPoint: false);
    }

    public static long ReadScatterAtOffset(SafeFileHandle handle, IReadOnlyList<Memory<byte>> buffers, long fileOffset)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null) return ReadScatter.Call(handle, buffers, fileOffset);
        ReadPoint(handle);
        bool bounded = IsBounded(handle);
        using var shield = bounded ? Green.Shield() : default;
        return Offload(hub, bounded ? PoolClaim.Offer() : null, s_readScatterReleased, (handle, buffers, fileOffset), write: false);
    }

    public static void WriteGatherAtOffset(SafeFileHandle handle, IReadOnlyList<ReadOnlyMemory<byte>> buffers, long fileOffset)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null)
        {
            WriteGather.Call(handle, buffers, fileOffset);
            return;
        }
        Parking.GiveWay();
        long length = 0;
        for (int i = 0; i < buffers.Count; i++) length += buffers[i].Length;
        CooperativeFileClose.NoteWritten(handle, fileOffset, length);
        bool bounded = IsBounded(handle);
        using var shield = bounded ? Green.Shield() : default;
        Offload(hub, bounded ? PoolClaim.Offer() : null, s_writeGatherReleased, (handle, buffers, fileOffset), write: true);
    }

    private static readonly Func<(SafeFileHandle Handle, IReadOnlyList<Memory<byte>> Buffers, long Offset), long> s_readScatterReleased =
        static s => ReadScatter.Call(s.Handle, s.Buffers, s.Offset);

    private static readonly Func<(SafeFileHandle Handle, IReadOnlyList<ReadOnlyMemory<byte>> Buffers, long Offset), bool> s_writeGatherReleased = static s =>
    {
        WriteGather.Call(s.Handle, s.Buffers, s.Offset);
        return true;
    };

    /// <summary>
    /// <paramref name="call"/> on a thread-pool thread while the greenlet waits, taken back and run released when no pool
    /// thread has started it within the grace (<see cref="PoolClaim"/>), so that no wake depends on a free pool thread
    /// (a 4 MiB File.WriteAllBytes with the pool's threads held took 4.9 s, waiting for the pool to grow). Only the pool
    /// runs it when <paramref name="claim"/> is null (a pipe's call where the reactor path does not apply, or no carrier
    /// left to take over the hub); a kill then waits for it, since it may use memory the frame pins. A write run released
    /// is no cancellation point (see <see cref="WriteReleased"/>).
    /// </summary>
    private static TResult Offload<TState, TResult>(Hub hub, PoolClaim? claim, Func<TState, TResult> call, TState state, bool write)
    {
        if (claim == PoolClaim.Late) return PoolClaim.RunReleased(call, state, WaitReason.File, cancellationPoint: !write);
        var task = Task.Run(() => claim is null || claim.PoolStarts() ? call(state) : default!);
        if (claim is null) Cooperative.Park(hub, task, null, WaitReason.File, drain: true);
        else if (!PoolClaim.Wait(hub, task, claim, WaitReason.File)) return PoolClaim.RunReleased(call, state, WaitReason.File, cancellationPoint: !write);
        return task.GetAwaiter().GetResult();
    }

    private static MethodInfo? Find(string name, params Type[] parameters) =>
        typeof(RandomAccess).GetMethod(name, BindingFlags.NonPublic | BindingFlags.Static, parameters);

    private static T Direct<T>(MethodInfo? method)
        where T : Delegate =>
        method?.CreateDelegate<T>() ?? CreateMissing<T>(typeof(T).Name);

    // This runtime has no such internal method: the patch set refuses it, and a direct call explains why.
    private static T CreateMissing<T>(string name)
        where T : Delegate
    {
        ReadFn read = (_, _, _) => throw Missing(name);
        WriteFn write = (_, _, _) => throw Missing(name);
        ReadScatterFn scatter = (_, _, _) => throw Missing(name);
        WriteGatherFn gather = (_, _, _) => throw Missing(name);
        Delegate d = typeof(T) == typeof(ReadFn) ? read : typeof(T) == typeof(WriteFn) ? write : typeof(T) == typeof(ReadScatterFn) ? scatter : gather;
        return (T)d;
    }

    private static MissingMethodException Missing(string name) =>
        new($"System.IO.RandomAccess has no internal method matching {name} in this runtime; the Files patch set is refused here.");
}

/// <summary>Raw read system calls, for the one moment the original ReadAtOffset is unreachable (see OriginalSlot).</summary>
internal static unsafe partial class RawFileIo
{
    private const int EINTR = 4;

    public static int ReadAtOffset(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        using (var lease = new FdLease(handle))
        {
            int fd = lease.Fd;
            fixed (byte* p = buffer)
            {
                while (true)
                {
                    // Like the original: pread at an offset, plain read for unseekable files (offset -1 or ESPIPE).
                    nint n = fileOffset >= 0 ? PRead(fd, p, buffer.Length, fileOffset) : Read(fd, p, buffer.Length);
                    if (n >= 0) return (int)n;
                    int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                    if (errno == EINTR) continue;
                    if (errno == 29 /* ESPIPE */ && fileOffset >= 0)
                    {
                        fileOffset = -1;
                        continue;
                    }
                    throw new IOException($"read failed with errno {errno} on {handle}.", errno);
                }
            }
        }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint PRead(int fd, byte* buffer, nint count, long offset);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, byte* buffer, nint count);
}
