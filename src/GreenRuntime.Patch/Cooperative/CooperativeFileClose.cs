using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Scheduling;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// The close of a file handle through which a greenlet wrote much, at <c>SafeFileHandle.ReleaseHandle()</c>, the one
/// place the descriptor is closed (<c>FileStream.Dispose</c>, <c>SafeFileHandle.Dispose</c>, every <c>File.*</c> helper
/// and the finalizer all reach it through <c>SafeHandle</c>'s last release): run with the hub's baton released.
/// </summary>
/// <remarks>
/// <para>A <c>close()</c> may write: ext4 starts the writeback of every delayed-allocation page of a file that was
/// truncated and then written, inside the close (<c>auto_da_alloc</c>: <c>FileMode.Create</c> or <c>Truncate</c> over an
/// existing file, <c>File.WriteAllBytes</c>, <c>SetLength(0)</c>, log rotation), XFS and btrfs do the same after a
/// truncation, and NFS sends the file's dirty pages to the server before a close returns. Measured on ext4 here, the
/// close after a truncate and rewrite took 0.11 ms for 1 MiB, 0.7 ms for 16 MiB, 17 ms for 64 MiB, 98 ms for 256 MiB and
/// 0.33 s for 1 GiB, during which a greenlet's close ran nothing else of its hub.</para>
/// <para>Which close may write is not known beforehand (no call asks the kernel how much of a file is dirty), so the
/// write funnel counts what greenlets write through each handle (<see cref="NoteWritten"/>), and a close on a greenlet
/// after <see cref="CooperativeFileOpen.ReleaseBytes"/> or more runs released: a hand-off each way, little beside
/// writing a megabyte. Writes that end below that offset are not counted, so the many small files (a
/// <c>File.WriteAllText</c> each) pay for no table entry, only a look-up at their close, and a small append to a large
/// log is not counted past its length. A close is no cancellation point: it ends by itself, and a kill or timeout that
/// comes meanwhile is raised at the greenlet's next blocking point, as after a released write. Where the baton cannot
/// be released (every carrier taken, a stackless greenlet), the close runs inline, as before.</para>
/// </remarks>
internal static class CooperativeFileClose
{
    /// <summary>The protected <c>SafeFileHandle.ReleaseHandle()</c> override (Unix: unlink for DeleteOnClose, flock
    /// unlock, <c>close()</c>).</summary>
    internal static readonly MethodInfo? ReleaseHandleMethod = typeof(SafeFileHandle).GetMethod("ReleaseHandle",
        BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.DeclaredOnly, Type.EmptyTypes);

    internal static readonly OriginalSlot<Func<SafeFileHandle, bool>> ReleaseHandleSlot =
        new(ReleaseHandleMethod?.CreateDelegate<Func<SafeFileHandle, bool>>() ?? (_ => throw new MissingMethodException(
            "Microsoft.Win32.SafeHandles.SafeFileHandle has no ReleaseHandle() override in this runtime; the Files patch set refuses it here.")));

    /// <summary>Bytes written by greenlets through a handle, counted from the first write that ended at
    /// <see cref="CooperativeFileOpen.ReleaseBytes"/> or beyond. Invariant: a handle is in the table only once such a
    /// write was made through it, so a close that finds none has nothing large to flush that a greenlet wrote.</summary>
    private static readonly ConditionalWeakTable<SafeFileHandle, Counter> Written = new();

    private static volatile bool s_anyCounted;

    private sealed class Counter
    {
        public long Bytes;
    }

    /// <summary>Counts <paramref name="length"/> bytes a greenlet wrote through <paramref name="handle"/> at
    /// <paramref name="fileOffset"/> (called by the write funnels on their greenlet path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void NoteWritten(SafeFileHandle handle, long fileOffset, long length)
    {
        if (fileOffset + length >= CooperativeFileOpen.ReleaseBytes) Count(handle, length);
    }

    private static void Count(SafeFileHandle handle, long length)
    {
        s_anyCounted = true;
        Interlocked.Add(ref Written.GetValue(handle, static _ => new Counter()).Bytes, length);
    }

    /// <summary>Replaces <c>SafeFileHandle.ReleaseHandle()</c> (Unix).</summary>
    public static bool ReleaseHandle(SafeFileHandle handle)
    {
        if (s_anyCounted && Written.TryGetValue(handle, out var counter) && Volatile.Read(ref counter.Bytes) >= CooperativeFileOpen.ReleaseBytes
            && Cooperative.ParkingHub() is not null)
        {
            Parking.GiveWay();
            return PoolClaim.RunReleased(s_release, handle, WaitReason.File, cancellationPoint: false);
        }
        return ReleaseHandleSlot.Call(handle);
    }

    private static readonly Func<SafeFileHandle, bool> s_release = static handle => ReleaseHandleSlot.Call(handle);
}
