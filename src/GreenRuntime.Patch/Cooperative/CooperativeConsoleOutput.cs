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
/// <para>A console write usually returns at once, so the common case must cost what the original costs. Per console
/// handle (its type is read once, with <c>statx</c>):</para>
/// <list type="bullet">
/// <item>a regular file or block device: the original (the kernel never waits for a reader there);</item>
/// <item>a pipe or socket (a shell's pipe, a container's log pipe, the journal's socket): one
/// <c>pwritev2(..., RWF_NOWAIT)</c> under <c>Console.Out</c>'s monitor, as the original takes it. It writes what fits
/// and fails with EAGAIN instead of waiting; only what did not fit is written by the original with the baton
/// released. The first write of each handle on a greenlet goes through the original, which also sets the console up; a handle
/// whose kernel refuses <c>RWF_NOWAIT</c> (EOPNOTSUPP) is treated as a terminal from then on; any other error is
/// left to the original, which reports it as it would have (EPIPE counts as written);</item>
/// <item>a character device that is not a terminal (<c>/dev/null</c>): as a pipe;</item>
/// <item>anything else (a terminal, whose cursor position the original tracks): <c>poll</c> first, and the original at once when the descriptor is writable and
/// the write is at most <see cref="AtomicPipeWrite"/> bytes; otherwise the original with the baton released.</item>
/// </list>
/// <para>Why the baton is released rather than the greenlet parked until the descriptor is writable: the
/// descriptor is shared with other processes (it is the process's stdout, often a shell's pipe) and must stay in
/// blocking mode, so the original's write may still block after any readiness check.</para>
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
    /// <summary>PIPE_BUF on Linux: a write of at most this many bytes to a descriptor that polls writable goes through whole.</summary>
    internal const int AtomicPipeWrite = 4096;

    internal delegate void WriteFn(SafeFileHandle handle, ReadOnlySpan<byte> buffer);

    internal static readonly MethodInfo? WriteFromConsoleStreamMethod = typeof(Console).Assembly.GetType("System.ConsolePal")
        ?.GetMethod("WriteFromConsoleStream", BindingFlags.NonPublic | BindingFlags.Static, [typeof(SafeFileHandle), typeof(ReadOnlySpan<byte>)]);

    internal static readonly OriginalSlot<WriteFn> WriteFromConsoleStreamSlot = new(
        WriteFromConsoleStreamMethod?.CreateDelegate<WriteFn>()
        ?? ((_, _) => throw new MissingMethodException("System.ConsolePal has no WriteFromConsoleStream(SafeFileHandle, ReadOnlySpan<byte>) in this runtime; console output is not patched here.")));

    private static readonly ConditionalWeakTable<SafeFileHandle, HandleState> s_handles = new();

    private static readonly Func<(nint Buffer, int Length, SafeFileHandle Owner), bool> s_released = static s =>
    {
        WriteFromConsoleStreamSlot.Call(s.Owner, new ReadOnlySpan<byte>((void*)s.Buffer, s.Length));
        return true;
    };

    /// <summary>Replaces <c>System.ConsolePal.WriteFromConsoleStream(SafeFileHandle, ReadOnlySpan&lt;byte&gt;)</c>.</summary>
    public static void WriteFromConsoleStream(SafeFileHandle handle, ReadOnlySpan<byte> buffer)
    {
        if (buffer.IsEmpty || handle.IsInvalid || handle.IsClosed || Cooperative.ParkingHub() is null)
        {
            WriteFromConsoleStreamSlot.Call(handle, buffer);
            return;
        }
        if (!s_handles.TryGetValue(handle, out var state))
        {
            s_handles.TryAdd(handle, new HandleState(KindOf(handle)));
            WriteFromConsoleStreamSlot.Call(handle, buffer); // the first write also sets the console up
            return;
        }
        if (state.Kind == HandleKind.NoWait)
        {
            lock (Console.Out) // what the original holds around its write
            {
                switch (TryWriteNoWait(handle, buffer, out int written))
                {
                    case NoWait.Done: return;
                    case NoWait.WouldBlock: WriteReleased(handle, buffer[written..]); return;
                    case NoWait.Failed: WriteFromConsoleStreamSlot.Call(handle, buffer[written..]); return;
                }
                state.Kind = HandleKind.Poll; // EOPNOTSUPP, nothing written
            }
        }
        if (state.Kind == HandleKind.Poll && (buffer.Length > AtomicPipeWrite || !PollsWritable(handle)))
            WriteReleased(handle, buffer);
        else
            WriteFromConsoleStreamSlot.Call(handle, buffer);
    }

    /// <summary>The original's write of <paramref name="rest"/> on this thread with the baton released, when the other
    /// writers' wait for the console's monitor is cooperative (see the remarks of the class); else the original as is.</summary>
    private static void WriteReleased(SafeFileHandle handle, ReadOnlySpan<byte> rest)
    {
        if (!Parking.CanReleaseBaton || !LockWaitsAreCooperative())
        {
            WriteFromConsoleStreamSlot.Call(handle, rest);
            return;
        }
        fixed (byte* pinned = rest) // the released call runs on this very thread, inside this frame
            Parking.RunReleased(s_released, ((nint)pinned, rest.Length, handle), WaitReason.File, cancellationPoint: false);
    }

    private static NoWait TryWriteNoWait(SafeFileHandle handle, ReadOnlySpan<byte> buffer, out int written)
    {
        written = 0;
        try
        {
            using var lease = new FdLease(handle);
            written = NoWaitFileIo.WriteNoWait(lease.Fd, buffer, -1, out int errno);
            return errno switch
            {
                0 => NoWait.Done,
                EAgain => NoWait.WouldBlock,
                EOpNotSupp when written == 0 => NoWait.Unsupported,
                _ => NoWait.Failed,
            };
        }
        catch (EntryPointNotFoundException)
        {
            return NoWait.Unsupported; // no pwritev2 in this libc
        }
    }

    /// <summary>Whether <c>poll</c> says <paramref name="handle"/> is writable now (or reports an error or hang-up, which
    /// the original's write then reports without waiting; so does a failed poll).</summary>
    private static bool PollsWritable(SafeFileHandle handle)
    {
        using (var lease = new FdLease(handle))
        {
            var poll = new PollFd { Fd = lease.Fd, Events = PollOut };
            return Poll(&poll, 1, 0) != 0;
        }
    }

    private static HandleKind KindOf(SafeFileHandle handle)
    {
        using (var lease = new FdLease(handle))
        {
            int fd = lease.Fd;
            var status = new StatxBuffer();
            if (Statx(fd, "", AtEmptyPath, StatxType, &status) != 0) return HandleKind.Poll;
            return (status.Mode & FileTypeMask) switch
            {
                RegularFile or BlockDevice => HandleKind.NeverWaits,
                Fifo or Socket => HandleKind.NoWait,
                CharacterDevice when IsATty(fd) == 0 => HandleKind.NoWait, // /dev/null and the like (EOPNOTSUPP: Poll)
                _ => HandleKind.Poll, // a terminal: the original keeps its cursor bookkeeping
            };
        }
    }

    private enum HandleKind : byte { NeverWaits, NoWait, Poll }

    private enum NoWait : byte { Done, WouldBlock, Failed, Unsupported }

    private sealed class HandleState(HandleKind kind)
    {
        public volatile HandleKind Kind = kind;
    }

    /// <summary>Whether a greenlet that meets a contended monitor waits with the baton released (the Locks patch set
    /// is applied): asked only on the released path, so its lock costs nothing in the common case.</summary>
    private static bool LockWaitsAreCooperative() =>
        CooperativeMonitor.EnterSlowpathMethod is { } enter && Patch.IsPatched(enter);

    private const short PollOut = 0x4;
    private const int EAgain = 11;
    private const int EOpNotSupp = 95;
    private const int Fifo = 0x1000;
    private const int Socket = 0xC000;
    private const int CharacterDevice = 0x2000;
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

    [LibraryImport("libc", EntryPoint = "isatty")]
    private static partial int IsATty(int fd);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirfd, string path, int flags, uint mask, StatxBuffer* buffer);
}
