using System.Text;
using GreenRuntime.Cooperative;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Pipes and FIFOs through FileStream (waits on the reactor, nothing left running after a kill or timeout), and
/// calls too large for the private buffer or with lists of buffers (never waiting for a held thread pool).</summary>
public partial class FileReadWriteTests
{
    /// <summary>Opens both ends of a new FIFO (a thread opens the write end: each open waits for the other).</summary>
    private (FileStream Reader, FileStream Writer) OpenFifo(string fifo)
    {
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        FileStream? writer = null;
        var opener = new Thread(() => writer = new FileStream(fifo, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0));
        opener.Start();
        var reader = new FileStream(fifo, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
        opener.Join();
        return (reader, writer!);
    }

    /// <summary>A FIFO read ended by a timeout used to go on in a thread-pool thread, into a buffer nobody read: it took
    /// the next data that arrived (6–24 of 180 bytes reached the reader), and held the descriptor open after
    /// <c>Dispose</c>. Now nothing is read until the data is there, as on a thread that only reads when it is.</summary>
    [Test]
    public void FifoReadsEndedByTimeoutsLoseNoDataAndLeaveNothingOpen()
    {
        string fifo = path + ".fifo";
        try
        {
            var (reader, writer) = OpenFifo(fifo);
            var buffer = new byte[100];
            int timedOut = 0;
            for (int i = 0; i < 20; i++)
                if (Green.WithTimeout(TimeSpan.FromMilliseconds(5), () => reader.Read(buffer), -1) == -1) timedOut++;
            Assert.That(timedOut, Is.EqualTo(20), "the writer is silent: every read times out");

            string expected = string.Concat(Enumerable.Range(0, 30).Select(i => $"msg{i:D2};"));
            var sender = new Thread(() =>
            {
                for (int i = 0; i < 30; i++)
                {
                    writer.Write(Encoding.ASCII.GetBytes($"msg{i:D2};"));
                    Thread.Sleep(10);
                }
                writer.Dispose();
            });
            sender.Start();
            var received = new StringBuilder();
            while (true)
            {
                int n = Green.WithTimeout(TimeSpan.FromMilliseconds(5), () => reader.Read(buffer), -1);
                if (n == 0) break;
                if (n > 0) received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            sender.Join();
            Assert.That(received.ToString(), Is.EqualTo(expected), "every byte, in order, to the reads that came after the timeouts");

            // Timed out again, then closed: the descriptor is closed (a write now finds no reader) and no read takes data.
            var (second, secondWriter) = OpenFifo(fifo + "2");
            for (int i = 0; i < 5; i++) Green.WithTimeout(TimeSpan.FromMilliseconds(5), () => second.Read(buffer), -1);
            second.Dispose();
            Assert.That(() => secondWriter.Write(new byte[1]), Throws.InstanceOf<IOException>(), "the reader's descriptor was closed by Dispose (EPIPE)");
            secondWriter.Dispose();
            reader.Dispose();
        }
        finally
        {
            File.Delete(fifo);
            File.Delete(fifo + "2");
        }
    }

    /// <summary>A FIFO's descriptor refuses RWF_NOWAIT, so its read was made once <c>poll()</c> reported data; a second
    /// reader of the FIFO (here a thread, as well another process) that took the data in between left that read blocked
    /// in <c>read()</c> with the hub's baton until the next write: the other greenlets stopped. Now the read itself never
    /// waits, and the greenlet goes back to the reactor when the other reader was first.</summary>
    [Test]
    public void FifoReadRacingAnotherReaderNeverHoldsTheHub()
    {
        string fifo = path + ".fifo";
        try
        {
            // The other reader's own open file description, non-blocking, so it needs no writer to open; with it open, the
            // writer's open and then the greenlet's reader's open return at once.
            Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
            int other = Open(fifo, 0x800 /* O_RDONLY | O_NONBLOCK */);
            Assert.That(other, Is.GreaterThanOrEqualTo(0));
            var writer = new FileStream(fifo, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
            var reader = new FileStream(fifo, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            const int Rounds = 1000, Burst = 64;
            int taken = 0, stalls = 0, rounds = 0, ticks = 0, armed = -1;
            bool stop = false;
            var ticker = Green.Spawn(() =>
            {
                while (!Volatile.Read(ref stop))
                {
                    Green.Sleep(1);
                    Interlocked.Increment(ref ticks);
                }
            });
            var greenletReader = Green.Spawn(() =>
            {
                // A byte per call: each call asks poll() and then reads, so the other reader often empties the FIFO in between.
                var buffer = new byte[1];
                int n;
                while ((n = reader.Read(buffer)) > 0) Interlocked.Add(ref taken, n);
            });
            var drainer = new Thread(() =>
            {
                // Once per burst, takes all that is left at a random moment after the greenlet began reading it: often
                // between its poll() and its read().
                var random = new Random(7);
                var buffer = new byte[4096];
                while (!Volatile.Read(ref stop))
                {
                    int round = Volatile.Read(ref armed);
                    if (round < 0 || Volatile.Read(ref taken) <= round * Burst) continue;
                    Thread.SpinWait(random.Next(0, 500));
                    long n = ReadFd(other, buffer, buffer.Length);
                    if (n > 0) Interlocked.Add(ref taken, (int)n);
                    Interlocked.CompareExchange(ref armed, -1, round);
                }
            });
            var feeder = new Thread(() =>
            {
                for (; rounds < Rounds; rounds++)
                {
                    Volatile.Write(ref armed, rounds);
                    writer.Write(new byte[Burst]);
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    while (Volatile.Read(ref taken) < (rounds + 1) * Burst && watch.ElapsedMilliseconds < 5000) Thread.Yield();
                    // The hub must still run its other greenlets whoever took the byte.
                    int before = Volatile.Read(ref ticks);
                    watch.Restart();
                    while (Volatile.Read(ref ticks) < before + 2 && watch.ElapsedMilliseconds < 1000) Thread.Yield();
                    if (Volatile.Read(ref ticks) < before + 2)
                    {
                        stalls++;
                        break;
                    }
                }
                writer.Dispose(); // the end of the stream: a read blocked meanwhile returns
            });
            drainer.Start();
            feeder.Start();
            greenletReader.Join();
            Parking.PollUntil(() => !feeder.IsAlive, null);
            Volatile.Write(ref stop, true);
            drainer.Join();
            ticker.Join();
            Close(other);
            reader.Dispose();
            Assert.That(stalls, Is.Zero, $"the hub stopped while the greenlet's read waited for data another reader took (round {rounds})");
            Assert.That(taken, Is.EqualTo(Rounds * Burst), "every byte reached one of the two readers");
        }
        finally
        {
            File.Delete(fifo);
        }
    }

    /// <summary>A FIFO write ended by a timeout used to be reported as timed out, then went out later from a thread-pool
    /// thread, between the bytes of the next write (the reader got A×131072 B×65536 A×65536 ...). Now a write that has
    /// started goes out whole, and one that timed out before any byte went out sends nothing: the stream is never cut or
    /// interleaved, as a thread's (A×300000 B×300000).</summary>
    [Test]
    public void FifoWritesEndedByTimeoutsAreNeverCutOrInterleaved()
    {
        string fifo = path + ".fifo";
        try
        {
            var (reader, writer) = OpenFifo(fifo);
            var got = new MemoryStream();
            var drainer = new Thread(() =>
            {
                Thread.Sleep(300);
                reader.CopyTo(got);
            });
            drainer.Start();
            bool aTimedOut = false;
            try
            {
                Green.WithTimeout(TimeSpan.FromMilliseconds(50), () => writer.Write(Enumerable.Repeat((byte)'A', 300_000).ToArray()));
            }
            catch (GreenTimeoutException)
            {
                aTimedOut = true;
            }
            writer.Write(Enumerable.Repeat((byte)'B', 300_000).ToArray());
            writer.Dispose();
            drainer.Join();
            reader.Dispose();

            Assert.That(aTimedOut, Is.False, "part of A went out at once, so the timeout waited for the rest of it");
            Assert.That(Runs(got.ToArray()), Is.EqualTo("Ax300000 Bx300000"));
        }
        finally
        {
            File.Delete(fifo);
        }

        // Timed out before any byte went out (the FIFO full, nobody reading): nothing of it is sent.
        try
        {
            var (reader, writer) = OpenFifo(fifo);
            var filler = Enumerable.Repeat((byte)'X', 4096).ToArray();
            var got = new MemoryStream();
            bool full = false;
            while (!full)
            {
                full = Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
                {
                    writer.Write(filler);
                    return false;
                }, true);
            }
            Assert.That(() => Green.WithTimeout(TimeSpan.FromMilliseconds(50), () => writer.Write(Enumerable.Repeat((byte)'A', 1000).ToArray())),
                Throws.TypeOf<GreenTimeoutException>());
            var drainer = new Thread(() => reader.CopyTo(got));
            drainer.Start();
            writer.Write(Enumerable.Repeat((byte)'B', 1000).ToArray());
            writer.Dispose();
            drainer.Join();
            reader.Dispose();
            string runs = Runs(got.ToArray());
            Assert.That(runs, Does.Not.Contain("A").And.EndWith(" Bx1000"), "the timed-out write sent nothing");
        }
        finally
        {
            File.Delete(fifo);
        }

        static string Runs(byte[] bytes)
        {
            var runs = new List<string>();
            for (int start = 0, i = 1; i <= bytes.Length; i++)
            {
                if (i < bytes.Length && bytes[i] == bytes[start]) continue;
                runs.Add($"{(char)bytes[start]}x{i - start}");
                start = i;
            }
            return string.Join(" ", runs);
        }
    }

    /// <summary>Calls over the private buffer's limit (1 MiB) and the vectored ones used to wait for a thread-pool thread
    /// with no take-back: a 4 MiB File.WriteAllBytes took 4.9 s with the pool's threads held. They are offered to the pool
    /// as the small calls are, and run released when no pool thread starts them.</summary>
    [Test]
    public void LargeAndVectoredFileCallsDoNotWaitForAThreadPoolThatIsHeld()
    {
        var data = new byte[4 << 20];
        new Random(7).NextBytes(data);
        string file = path + ".large";
        NoWaitFileIo.Enabled = false; // no inline attempt either: every call goes the way of one that would wait for the disk
        try
        {
            using var pool = new HeldThreadPool();
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Green.Spawn(() =>
            {
                File.WriteAllBytes(file, data);
                Assert.That(File.ReadAllBytes(file), Is.EqualTo(data));
                using var handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
                RandomAccess.Write(handle, [data.AsMemory(0, 1000), data.AsMemory(5000, 1000)], 10);
                var first = new byte[1000];
                var second = new byte[1000];
                long read = RandomAccess.Read(handle, [first.AsMemory(), second.AsMemory()], 10);
                Assert.That(read, Is.EqualTo(2000));
                Assert.That(first, Is.EqualTo(data[..1000]));
                Assert.That(second, Is.EqualTo(data[5000..6000]));
            }).Get();
            // Generous: tens of milliseconds when the calls are taken back; seconds when each waits for the pool to grow.
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2.5)), "4 MiB written and read, a gather and a scatter, with the pool's threads held");
        }
        finally
        {
            NoWaitFileIo.Enabled = true;
            File.Delete(file);
        }
    }
}
