
namespace GreenRuntime.Cooperative;

/// <summary>
/// Reads of <see cref="Console.In"/> on a greenlet (<c>Console.ReadLine</c>, <c>Console.Read</c>,
/// <c>Console.In.ReadLine/Read</c>): the read runs on a thread of its own while only the greenlet waits.
/// </summary>
/// <remarks>
/// <para>The patch point is the internal <c>System.IO.SyncTextReader</c> that <see cref="Console.In"/> is
/// (<c>Console.ReadLine</c> itself cannot be detoured on .NET 10: a call sits in its first bytes). The same
/// type also backs every <see cref="TextReader.Synchronized"/> reader; those run the original.</para>
/// <para>A read on stdin cannot be cancelled. When the waiting greenlet is killed, the read it started stays
/// pending and its result is kept: the next read of the same kind on <see cref="Console.In"/>, on a greenlet
/// or not, returns it instead of reading again (the oldest first, when several were abandoned), so no input is lost
/// or reordered.</para>
/// </remarks>
internal static class CooperativeConsole
{
    internal static readonly OriginalSlot<Func<TextReader, string?>> ReadLineSlot = new(static r => r.ReadLine());
    internal static readonly OriginalSlot<Func<TextReader, int>> ReadSlot = new(static r => r.Read());

    private static readonly Pending<string?> s_pendingLine = new();
    private static readonly Pending<int> s_pendingChar = new();

    /// <summary>Replaces <c>SyncTextReader.ReadLine()</c>.</summary>
    public static string? ReadLine(TextReader reader) => ReadVia(reader, s_pendingLine, ReadLineSlot.Call);

    /// <summary>Replaces <c>SyncTextReader.Read()</c>.</summary>
    public static int Read(TextReader reader) => ReadVia(reader, s_pendingChar, ReadSlot.Call);

    private static T ReadVia<T>(TextReader reader, Pending<T> pending, Func<TextReader, T> original)
    {
        var hub = Cooperative.ParkingHub();
        bool isStdin = ReferenceEquals(reader, Console.In);
        if (!isStdin) return original(reader);
        var leftover = pending.Take(reader);
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

        public static Task<T> Read<T>(Func<TextReader, T> original, TextReader reader)
        {
            var result = new TaskCompletionSource<T>();
            s_reads.Enqueue(() =>
            {
                try
                {
                    result.SetResult(original(reader));
                }
                catch (Exception e)
                {
                    result.SetException(e);
                }
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
