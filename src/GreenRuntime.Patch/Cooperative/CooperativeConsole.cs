
namespace GreenRuntime.Cooperative;

/// <summary>
/// Reads of <see cref="Console.In"/> on a greenlet (<c>Console.ReadLine</c>, <c>Console.Read</c>,
/// <c>Console.In.ReadLine/Read</c>) and of the terminal's keys (<c>Console.ReadKey</c>): the read runs on a thread of
/// its own while only the greenlet waits.
/// </summary>
/// <remarks>
/// <para>The patch point is the internal <c>System.IO.SyncTextReader</c> that <see cref="Console.In"/> is
/// (<c>Console.ReadLine</c> itself cannot be detoured on .NET 10: a call sits in its first bytes). The same
/// type also backs every <see cref="TextReader.Synchronized"/> reader; those run the original. <c>Console.ReadKey</c>
/// ends in the same type's <c>ReadKey(bool)</c> on the terminal's reader, after the check that throws when stdin is
/// redirected, which so stays on the greenlet; the key is read on the same thread as the lines, in the order asked.</para>
/// <para>A read on stdin cannot be cancelled. When the waiting greenlet is killed, the read it started stays
/// pending and its result is kept: the next read of the same kind on <see cref="Console.In"/>, on a greenlet
/// or not, returns it instead of reading again (the oldest first, when several were abandoned), so no input is lost
/// or reordered.</para>
/// <para>Input already in <see cref="Console.In"/>'s buffer is read on the greenlet itself: when stdin is redirected the
/// reader is a <see cref="StreamReader"/> that reads 4 KiB at a time, and a line it holds whole (or a character, for
/// <c>Read</c>) needs no system call. Sending each of those reads through the stdin thread cost two thread hand-offs
/// per line: 100,000 piped lines took 1.85 s against 0.25 s on a thread. The buffer is looked at under the reader's own
/// lock, and only while no read is queued on the stdin thread or kept from a killed greenlet, so the order of the
/// lines is the order of the reads.</para>
/// </remarks>
internal static class CooperativeConsole
{
    internal static readonly OriginalSlot<Func<TextReader, string?>> ReadLineSlot = new(static r => r.ReadLine());
    internal static readonly OriginalSlot<Func<TextReader, int>> ReadSlot = new(static r => r.Read());
    internal static readonly OriginalSlot<Func<TextReader, bool, ConsoleKeyInfo>> ReadKeySlot = new(static (_, intercept) => Console.ReadKey(intercept)); // the terminal's reader: the only one it is called on

    private static readonly Pending<string?> s_pendingLine = new();
    private static readonly Pending<int> s_pendingChar = new();
    private static readonly Pending<ConsoleKeyInfo> s_pendingKey = new();

    /// <summary>Replaces <c>SyncTextReader.ReadLine()</c>.</summary>
    public static string? ReadLine(TextReader reader) => ReadVia(reader, s_pendingLine, ReadLineSlot.Call, wholeLine: true);

    /// <summary>Replaces <c>SyncTextReader.Read()</c>.</summary>
    public static int Read(TextReader reader) => ReadVia(reader, s_pendingChar, ReadSlot.Call, wholeLine: false);

    /// <summary>Replaces <c>SyncTextReader.ReadKey(bool)</c>: only <c>Console.ReadKey</c> calls it, on the terminal's reader
    /// (which is <see cref="Console.In"/> unless <see cref="Console.SetIn"/> replaced that).</summary>
    public static ConsoleKeyInfo ReadKey(TextReader reader, bool intercept)
        // A key kept from a killed greenlet was read with the intercept of the read that was abandoned.
        => ReadOnStdinThread(Cooperative.ParkingHub(), reader, s_pendingKey, s_pendingKey.Take(reader), r => ReadKeySlot.Call(r, intercept));

    private static T ReadVia<T>(TextReader reader, Pending<T> pending, Func<TextReader, T> original, bool wholeLine)
    {
        var hub = Cooperative.ParkingHub();
        bool isStdin = ReferenceEquals(reader, Console.In);
        if (!isStdin) return original(reader);
        var leftover = pending.Take(reader);
        if (hub is not null && leftover is null && BufferedInput.Serves(reader, wholeLine, original, out var buffered))
            return buffered;
        return ReadOnStdinThread(hub, reader, pending, leftover, original);
    }

    /// <summary>Waits for <paramref name="leftover"/> (a read a killed greenlet left) or for a new read on the stdin
    /// thread: parked on <paramref name="hub"/>, or blocking when there is none.</summary>
    private static T ReadOnStdinThread<T>(Hub? hub, TextReader reader, Pending<T> pending, StdinRead<T>? leftover, Func<TextReader, T> original)
    {
        if (hub is null)
        {
            if (leftover is null) return original(reader);
            Parking.WaitBlocking(leftover.Task);
            return leftover.Task.GetAwaiter().GetResult();
        }
        var read = leftover ?? new StdinRead<T>(Interlocked.Increment(ref s_reads), StdinThread.Read(original, reader));
        try
        {
            Cooperative.Park(hub, read.Task, null, WaitReason.Other);
        }
        catch
        {
            pending.Keep(reader, read); // killed: the next reader gets this read's result
            throw;
        }
        return read.Task.GetAwaiter().GetResult();
    }

    private static long s_reads;

    /// <summary>Reads that need no system call: what <see cref="Console.In"/>'s <see cref="StreamReader"/> already holds.</summary>
    private static class BufferedInput
    {
        private static System.Reflection.FieldInfo? s_inner;

        // Until the synchronized reader or StreamReader lacks a field read below (another runtime's): then the stdin
        // thread does every read.
        private static bool s_usable = true;

        public static bool Serves<T>(TextReader reader, bool wholeLine, Func<TextReader, T> original, out T result)
        {
            result = default!;
            if (!s_usable || StdinThread.Busy) return false;
            s_inner ??= reader.GetType().GetField("_in", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);
            if (s_inner is null)
            {
                s_usable = false;
                return false;
            }
            if (s_inner.GetValue(reader) is not StreamReader inner) return false; // a terminal's reader: interactive input
            // The synchronized reader's methods lock the reader itself: holding that lock, nobody else can take what is
            // buffered between the look and the read. A reader busy elsewhere (a thread blocked in a read) is not waited for.
            if (!Monitor.TryEnter(reader)) return false;
            try
            {
                int position = CharPos(inner), length = CharLen(inner);
                bool enough = wholeLine
                    ? position < length && Array.IndexOf(CharBuffer(inner), '\n', position, length - position) >= 0
                    : position < length;
                if (!enough) return false;
                result = original(reader);
                return true;
            }
            catch (MissingFieldException)
            {
                s_usable = false;
                return false;
            }
            finally
            {
                Monitor.Exit(reader);
            }
        }

        [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "_charBuffer")]
        private static extern ref char[] CharBuffer(StreamReader reader);

        [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "_charPos")]
        private static extern ref int CharPos(StreamReader reader);

        [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "_charLen")]
        private static extern ref int CharLen(StreamReader reader);
    }

    /// <summary>A read queued on the stdin thread, numbered in the order the reads were queued (and so will complete).</summary>
    private sealed record StdinRead<T>(long Number, Task<T> Task);

    /// <summary>
    /// The thread that makes the stdin reads greenlets ask for, one after another, completing each read's task itself
    /// (so the wake reaches the hub from that thread). The thread pool would do, but legacy code often holds every pool
    /// thread, and a read queued behind them did not even start until the pool grew; a plain thread blocked in
    /// Console.ReadLine waits for nobody but the typist. Started with the first read, a background thread.
    /// </summary>
    private static class StdinThread
    {
        private static readonly System.Collections.Concurrent.ConcurrentQueue<Action> s_reads = new();
        private static readonly SemaphoreSlim s_queued = new(0);
        private static int s_started;
        private static int s_unfinished;

        /// <summary>Whether a read is queued or running on the thread: a later read must then come after it.</summary>
        public static bool Busy => Volatile.Read(ref s_unfinished) != 0;

        public static Task<T> Read<T>(Func<TextReader, T> original, TextReader reader)
        {
            var result = new TaskCompletionSource<T>();
            Interlocked.Increment(ref s_unfinished);
            s_reads.Enqueue(() =>
            {
                T value = default!;
                Exception? error = null;
                try
                {
                    value = original(reader);
                }
                catch (Exception e)
                {
                    error = e;
                }
                // Finished before the reader hears of it: its next read may then take what is buffered on its greenlet.
                Interlocked.Decrement(ref s_unfinished);
                if (error is null) result.SetResult(value);
                else result.SetException(error);
            });
            if (Interlocked.Exchange(ref s_started, 1) == 0)
                new Thread(Loop) { IsBackground = true, Name = "GreenRuntime stdin" }.Start();
            s_queued.Release();
            return result.Task;
        }

        private static void Loop()
        {
            while (true)
            {
                s_queued.Wait(); // no hub on this thread: the original wait
                if (s_reads.TryDequeue(out var read)) read();
            }
        }
    }

    /// <summary>
    /// The reads abandoned by killed greenlets, kept for the next readers of the same TextReader, oldest first: each read
    /// consumes the input that comes when its turn on the stdin thread comes, so a reader that took a newer one before an
    /// older one would get the lines out of order (and with a single slot, a second abandoned read lost its line).
    /// </summary>
    private sealed class Pending<T>
    {
        private readonly List<(TextReader Reader, StdinRead<T> Read)> _kept = [];
        private readonly Lock _gate = new();

        public StdinRead<T>? Take(TextReader reader)
        {
            lock (_gate)
            {
                int oldest = -1;
                for (int i = 0; i < _kept.Count; i++)
                    if (ReferenceEquals(_kept[i].Reader, reader) && (oldest < 0 || _kept[i].Read.Number < _kept[oldest].Read.Number))
                        oldest = i;
                if (oldest < 0) return null;
                var read = _kept[oldest].Read;
                _kept.RemoveAt(oldest);
                return read;
            }
        }

        public void Keep(TextReader reader, StdinRead<T> read)
        {
            lock (_gate)
                _kept.Add((reader, read));
        }
    }
}
