using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GreenRuntime.Scheduling;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Reads and writes of a file handle whose calls wait for the other side (a pipe, a FIFO, a terminal: what the original
/// reads with <c>read()</c> and writes with <c>write()</c>), done like a pipe-backed Socket's: the non-blocking call
/// first, and a wait on the hub's reactor (<see cref="Parking.WaitReadable"/>) while it would block.
/// </summary>
/// <remarks>
/// <para>Nothing runs anywhere while the greenlet waits, so a kill or a timeout leaves nothing behind. Such a call used
/// to run on a thread-pool thread into a private buffer, abandoned by a kill: the abandoned read went on waiting, took
/// the next data that arrived (a reader looping with a 10 ms timeout got 6–24 of 180 bytes a writer sent) and held its
/// pool thread and the descriptor (a <c>Dispose</c> did not close it); an abandoned write went out later, between the
/// bytes of the next one.</para>
/// <para>The protocol, per call: (1) <c>preadv2</c>/<c>pwritev2</c> with <c>RWF_NOWAIT</c> at the descriptor's position,
/// which moves what is there (or fits) and answers EAGAIN instead of waiting; (2) on EAGAIN, park until the reactor
/// reports readiness (a <c>poll()</c> with growing pauses where the reactor cannot watch the descriptor), then 1 again.
/// A read returns what its first successful call got, as the original's one <c>read()</c> does; a write loops until all
/// of it is out, as the original's does.</para>
/// <para>A write is one message: once part of it went out, it waits for the rest under a <see cref="CancellationShield"/>,
/// so a kill or timeout is raised at the greenlet's next blocking point and the stream is never cut or interleaved with
/// the next write (as a socket's send, docs/patching.md). Before anything went out it is interrupted at once.</para>
/// <para>A descriptor that refuses <c>RWF_NOWAIT</c> is remembered per handle: on Linux 6.18 a FIFO opened by its path
/// and a terminal refuse it, an anonymous pipe takes it. Its read is made through a non-blocking open file description
/// of its own on the same FIFO (<see cref="ReadFifoNoWait"/>), so another reader that empties the FIFO first sends the
/// greenlet back to waiting; a terminal's waits until <c>poll()</c> reports it readable and then makes the original's read,
/// which returns at once unless another reader of the terminal took the input first. Its write is the original's, PIPE_BUF bytes at a time, each once <c>poll()</c> reports room
/// (<see cref="WriteInChunks"/>).</para>
/// <para>Any other error of the non-blocking call is not reported from here: the original then runs and raises its
/// own exception.</para>
/// </remarks>
internal static unsafe partial class UnseekableFileIo
{
    private const int EIntr = NoWaitFileIo.EIntr, EAgain = NoWaitFileIo.EAgain, ENoSys = NoWaitFileIo.ENoSys, EOpNotSupp = NoWaitFileIo.EOpNotSupp;
    private const short PollIn = 0x001, PollOut = 0x004;
    private const int PipeBuf = 4096; // Linux's PIPE_BUF: the largest write to a pipe that is never split
    private const int ORdOnly = 0, ONonBlock = 0x800, OCloExec = 0x80000, ONoCtty = 0x100;
    private const int AtEmptyPath = 0x1000, StatxType = 0x1, StatxSize = 256, StatxModeOffset = 28;
    private const int SIfMt = 0xF000, SIfIfo = 0x1000;

    /// <summary>Handles that refused RWF_NOWAIT reads (<c>true</c>) or writes (<c>false</c>) — both are recorded separately.</summary>
    private static readonly ConditionalWeakTable<SafeFileHandle, Refusals> s_refused = new();

    private sealed class Refusals
    {
        public volatile bool Reads, Writes;

        /// <summary>Not a FIFO that can be opened again privately: its reads wait for <c>poll()</c>, then read.</summary>
        public volatile bool NotFifo;

        /// <summary>Known to be a FIFO (or a pipe).</summary>
        public volatile bool Fifo;
    }

    /// <summary>Whether calls on a handle that is not seekable may come here: the handle's own flag tells such a handle from
    /// a seekable file (whose calls are at an offset), and the calls here are Linux's.</summary>
    public static bool Applies => OperatingSystem.IsLinux() && NoWaitFileIo.SupportsRandomAccess is not null;

    /// <summary>One read of at most <paramref name="buffer"/>.Length bytes, parking while nothing is there.</summary>
    public static int Read(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        while (true)
        {
            if (TryReadNow(handle, buffer, fileOffset) is { } read) return read;
            WaitReady(handle, write: false);
        }
    }

    /// <summary>All of <paramref name="buffer"/>, parking while the other side's buffer is full.</summary>
    public static void Write(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset)
    {
        int sent = 0;
        while (sent < buffer.Length)
        {
            int n = TryWriteNow(handle, buffer[sent..], fileOffset, out bool refused);
            if (refused)
            {
                WriteInChunks(handle, buffer, sent, fileOffset);
                return;
            }
            sent += n;
            if (sent == buffer.Length) return;
            // Once part of the message went out, the rest goes too, whatever comes meanwhile (see the remarks).
            using (sent > 0 ? Green.Shield() : default)
                WaitReady(handle, write: true);
        }
    }

    /// <summary>The bytes read (0 at the end of the stream), or null when nothing is there yet.</summary>
    private static int? TryReadNow(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        if (!Refused(handle, reads: true))
        {
            try
            {
                int n, errno;
                using (var lease = new FdLease(handle))
                    n = NoWaitFileIo.ReadNoWait(lease.Fd, buffer, -1, out errno);
                if (n >= 0) return n;
                if (errno == EAgain) return null;
                if (errno is EOpNotSupp or ENoSys)
                {
                    Refuse(handle, reads: true);
                    return null;
                }
                // any other error: the original reports it
            }
            catch (EntryPointNotFoundException)
            {
                Refuse(handle, reads: true);
                return null;
            }
        }
        else
        {
            switch (ReadFifoNoWait(handle, buffer, out int n))
            {
                case FifoRead.Done: return n;
                case FifoRead.WouldBlock: return null;
                case FifoRead.NotFifo when !IsReady(handle, PollIn): return null;
            }
        }
        return CooperativeFile.ReadAt.Call(handle, buffer, fileOffset);
    }

    private enum FifoRead : byte { Done, WouldBlock, NotFifo, Failed }

    /// <summary>
    /// The read of a FIFO whose descriptor refuses RWF_NOWAIT, made so that it never waits: through an open file
    /// description of its own on the same FIFO (<c>/proc/self/fd/N</c> opened with O_NONBLOCK), read and closed at once.
    /// </summary>
    /// <remarks>A <c>poll()</c> and then the original's blocking <c>read()</c> left a window: another reader of the FIFO
    /// (a thread, another process) that emptied it in between left the read blocked with the hub's baton until the next
    /// write. Setting O_NONBLOCK on the handle's own description for the call would show the switch to every other user
    /// of that description (a thread's read of the same FileStream would fail with EAGAIN). A FIFO's data belongs to the
    /// FIFO, not to a description, so a private one reads exactly what the handle would; it is a reader only for the
    /// length of the call, so a writer's EPIPE after the last reader closed is unchanged. Only FIFOs and pipes: reopening
    /// another character device (a pseudo-terminal master) would open a new device.</remarks>
    private static FifoRead ReadFifoNoWait(SafeFileHandle handle, Span<byte> buffer, out int read)
    {
        read = 0;
        var refusals = s_refused.GetValue(handle, static _ => new Refusals());
        if (refusals.NotFifo) return FifoRead.NotFifo;
        if (handle.IsClosed) return FifoRead.Failed; // the original reports it
        using var lease = new FdLease(handle);
        if (!refusals.Fifo && !(refusals.Fifo = IsFifo(lease.Fd)))
        {
            refusals.NotFifo = true;
            return FifoRead.NotFifo;
        }
        int own = OpenPath($"/proc/self/fd/{lease.Fd}", ORdOnly | ONonBlock | OCloExec | ONoCtty);
        if (own < 0)
        {
            refusals.NotFifo = true; // no /proc, or no right to open the FIFO again: poll() and the original's read
            return FifoRead.NotFifo;
        }
        try
        {
            fixed (byte* p = buffer)
            {
                nint n;
                int errno;
                do
                {
                    n = ReadFd(own, p, buffer.Length);
                    errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
                }
                while (n < 0 && errno == EIntr);
                if (n >= 0)
                {
                    read = (int)n;
                    return FifoRead.Done;
                }
                return errno == EAgain ? FifoRead.WouldBlock : FifoRead.Failed; // any other error: the original reports it
            }
        }
        finally
        {
            CloseFd(own);
        }
    }

    /// <summary>Whether the descriptor is a FIFO or a pipe (<c>statx</c>'s file type).</summary>
    private static bool IsFifo(int fd)
    {
        var statx = stackalloc byte[StatxSize];
        if (Statx(fd, "", AtEmptyPath, StatxType, statx) != 0) return false;
        ushort mode = *(ushort*)(statx + StatxModeOffset);
        return (mode & SIfMt) == SIfIfo;
    }

    /// <summary>The bytes written (0 when nothing fits now); <paramref name="refused"/> when the descriptor refuses
    /// RWF_NOWAIT. Any other error: the original writes all of <paramref name="buffer"/> and reports it.</summary>
    private static int TryWriteNow(SafeFileHandle handle, ReadOnlySpan<byte> buffer, long fileOffset, out bool refused)
    {
        refused = Refused(handle, reads: false);
        if (refused) return 0;
        int written, errno;
        try
        {
            using var lease = new FdLease(handle);
            written = NoWaitFileIo.WriteNoWait(lease.Fd, buffer, -1, out errno);
        }
        catch (EntryPointNotFoundException)
        {
            (written, errno) = (0, ENoSys);
        }
        if (errno is 0 or EAgain) return written;
        if (errno is EOpNotSupp or ENoSys && written == 0)
        {
            Refuse(handle, reads: false);
            refused = true;
            return 0;
        }
        CooperativeFile.WriteAt.Call(handle, buffer[written..], fileOffset); // an error the original raises (EPIPE: the reader is gone)
        return buffer.Length;
    }

    /// <summary>
    /// The write of a descriptor that refuses RWF_NOWAIT: the original's write of at most <see cref="PipeBuf"/> bytes at a
    /// time, each once <c>poll()</c> reports the descriptor writable. A pipe that is writable has a free page, and a write
    /// of at most PIPE_BUF bytes then goes out whole at once (POSIX makes it atomic), so no call waits; the waits are on
    /// the reactor, shielded once part of the message went out (see the remarks).
    /// </summary>
    private static void WriteInChunks(SafeFileHandle handle, ReadOnlySpan<byte> buffer, int sent, long fileOffset)
    {
        while (sent < buffer.Length)
        {
            // poll() first: the reactor reports edges, and a descriptor that stayed writable since its last wait has none.
            while (!IsReady(handle, PollOut))
                using (sent > 0 ? Green.Shield() : default)
                    WaitReady(handle, write: true);
            int chunk = Math.Min(PipeBuf, buffer.Length - sent);
            CooperativeFile.WriteAt.Call(handle, buffer.Slice(sent, chunk), fileOffset);
            sent += chunk;
        }
    }

    /// <summary>Parks until the descriptor may be ready: on the reactor, or, where it cannot watch the descriptor, asking
    /// <c>poll()</c> with growing pauses. A kill or timeout is raised here (unless shielded).</summary>
    private static void WaitReady(SafeFileHandle handle, bool write)
    {
        if ((write ? Parking.WaitWritable(handle) : Parking.WaitReadable(handle)) is not null) return;
        short events = write ? PollOut : PollIn;
        Parking.PollUntil(() => IsReady(handle, events), null);
    }

    /// <summary>Whether <c>poll()</c> reports the descriptor ready for <paramref name="events"/> (or failed, or hung
    /// up): a call then returns at once. True for a closed handle: the call reports it.</summary>
    private static bool IsReady(SafeFileHandle handle, short events)
    {
        if (handle.IsClosed) return true;
        using var lease = new FdLease(handle);
        var entry = new PollFd { Fd = lease.Fd, Events = events };
        int n;
        do n = Poll(&entry, 1, 0);
        while (n < 0 && Marshal.GetLastPInvokeError() == EIntr);
        return n != 0;
    }

    private static bool Refused(SafeFileHandle handle, bool reads) =>
        s_refused.TryGetValue(handle, out var r) && (reads ? r.Reads : r.Writes);

    private static void Refuse(SafeFileHandle handle, bool reads)
    {
        var r = s_refused.GetValue(handle, static _ => new Refusals());
        if (reads) r.Reads = true;
        else r.Writes = true;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenPath(string path, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint ReadFd(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int CloseFd(int fd);

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirFd, string path, int flags, uint mask, byte* buffer);
}
