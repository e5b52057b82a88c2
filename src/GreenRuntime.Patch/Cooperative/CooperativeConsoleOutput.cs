using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GreenRuntime.Scheduling;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Writes to the console streams on a greenlet (<c>Console.Out</c>, <c>Console.Error</c>,
/// <c>Console.OpenStandardOutput/Error</c>), at the internal <c>System.ConsolePal.WriteFromConsoleStream</c> they all
/// reach on Unix: a write that would wait for the reader of a pipe, socket or terminal runs on the greenlet's own
/// thread with the hub's baton released, so the other greenlets go on while the reader catches up.
/// </summary>
/// <remarks>
/// <para>A console write usually returns at once, so the common case must stay one system call: the write is made
/// directly when the descriptor is a regular file or a block device (the kernel never waits for a reader there), or
/// when <c>poll</c> says the descriptor is writable and the write is at most <see cref="AtomicPipeWrite"/> bytes. On
/// Linux a pipe reports writable while one of its buffers is free, and a write of up to PIPE_BUF bytes then goes
/// through whole. Only a longer write, or one to a descriptor that is not writable (its reader stopped reading and
/// the buffer is full), takes the released path, which costs two thread hand-offs.</para>
/// <para>Why the baton is released rather than the greenlet parked until the descriptor is writable: the
/// descriptor is shared with other processes (it is the process's stdout, often a shell's pipe) and must stay in
/// blocking mode, so a write can still block after any readiness check; and the original keeps its own semantics
/// (partial writes, EPIPE treated as success, the terminal's cursor bookkeeping) only when it runs itself.</para>
/// <para>The caller holds <c>Console.Out</c>'s monitor (the writers are synchronized, and the original locks it
/// again). While the write is released, another greenlet writing to the console waits for that monitor: that wait
/// is cooperative only under the Locks patch set. Without it, the other greenlet would block the hub in
/// <c>Monitor.Enter</c> while the released greenlet needs the hub's baton to return and exit the monitor, a deadlock;
/// so without the Locks set a write that would wait runs the original with the baton held, as if unpatched.</para>
/// <para>A console write is not a cancellation point: a kill or timeout that arrives while it waits is raised at the
/// greenlet's next blocking call (the bytes are written either way; a write cannot be taken back halfway).</para>
/// </remarks>
internal static unsafe partial class CooperativeConsoleOutput
{
    /// <summary>PIPE_BUF on Linux: a pipe write of at most this many bytes is atomic, and fits in one free buffer.</summary>
    internal const int AtomicPipeWrite = 4096;

    internal delegate void WriteFn(SafeFileHandle handle, ReadOnlySpan<byte> buffer);

    internal static readonly MethodInfo? WriteFromConsoleStreamMethod = typeof(Console).Assembly.GetType("System.ConsolePal")
        ?.GetMethod("WriteFromConsoleStream", BindingFlags.NonPublic | BindingFlags.Static, [typeof(SafeFileHandle), typeof(ReadOnlySpan<byte>)]);

    internal static readonly OriginalSlot<WriteFn> WriteFromConsoleStreamSlot = new(
        WriteFromConsoleStreamMethod?.CreateDelegate<WriteFn>()
        ?? ((_, _) => throw new MissingMethodException("System.ConsolePal has no WriteFromConsoleStream(SafeFileHandle, ReadOnlySpan<byte>) in this runtime; console output is not patched here.")));

    /// <summary>Per console handle: whether it is a regular file or block device, whose writes never wait for a reader.</summary>
    private static readonly ConditionalWeakTable<SafeFileHandle, StrongBox<bool>> s_neverWaits = new();

    private static readonly Func<(nint Buffer, int Length, SafeFileHandle Owner), bool> s_released = static s =>
    {
        WriteFromConsoleStreamSlot.Call(s.Owner, new ReadOnlySpan<byte>((void*)s.Buffer, s.Length));
        return true;
    };

    /// <summary>Replaces <c>System.ConsolePal.WriteFromConsoleStream(SafeFileHandle, ReadOnlySpan&lt;byte&gt;)</c>.</summary>
    public static void WriteFromConsoleStream(SafeFileHandle handle, ReadOnlySpan<byte> buffer)
    {
        if (buffer.IsEmpty || Cooperative.ParkingHub() is null || WritesAtOnce(handle, buffer.Length)
            || !Parking.CanReleaseBaton || !LockWaitsAreCooperative())
        {
            WriteFromConsoleStreamSlot.Call(handle, buffer);
            return;
        }
        fixed (byte* pinned = buffer) // the released call runs on this very thread, inside this frame
            Parking.RunReleased(s_released, ((nint)pinned, buffer.Length, handle), WaitReason.File, cancellationPoint: false);
    }

    /// <summary>Whether a write of <paramref name="length"/> bytes to <paramref name="handle"/> returns without waiting
    /// for a reader (see the remarks of the class). An error of fstat or poll says yes: the original then reports it.</summary>
    private static bool WritesAtOnce(SafeFileHandle handle, int length)
    {
        if (handle.IsInvalid || handle.IsClosed) return true;
        if (!s_neverWaits.TryGetValue(handle, out var neverWaits))
            neverWaits = s_neverWaits.GetValue(handle, static h => new StrongBox<bool>(IsFileOrBlockDevice(h)));
        if (neverWaits.Value) return true;
        if (length > AtomicPipeWrite) return false;
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            var poll = new PollFd { Fd = (int)handle.DangerousGetHandle(), Events = PollOut };
            int ready = Poll(&poll, 1, 0);
            return ready != 0; // writable, an error or hang-up (the original's write reports it), or poll failed
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    private static bool IsFileOrBlockDevice(SafeFileHandle handle)
    {
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            var status = new StatxBuffer();
            if (Statx((int)handle.DangerousGetHandle(), "", AtEmptyPath, StatxType, &status) != 0) return false;
            int type = status.Mode & FileTypeMask;
            return type is RegularFile or BlockDevice;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>Whether a greenlet that meets a contended monitor waits with the baton released (the Locks patch set
    /// is applied): asked only on the released path, so its lock costs nothing in the common case.</summary>
    private static bool LockWaitsAreCooperative() =>
        CooperativeMonitor.EnterSlowpathMethod is { } enter && Patch.IsPatched(enter);

    private const short PollOut = 0x4;
    private const int AtEmptyPath = 0x1000;
    private const uint StatxType = 0x1;
    private const int FileTypeMask = 0xF000;
    private const int RegularFile = 0x8000;
    private const int BlockDevice = 0x6000;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    /// <summary>struct statx: only stx_mode is read; the rest is room for what the kernel writes (256 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct StatxBuffer
    {
        [FieldOffset(28)] public ushort Mode;
    }

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirfd, string path, int flags, uint mask, StatxBuffer* buffer);
}
