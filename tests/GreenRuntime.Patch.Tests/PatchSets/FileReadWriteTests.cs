using System.Runtime.InteropServices;
using GreenRuntime.Cooperative;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Patched file reads and writes on greenlets: cached data read inline (no thread-pool work item), the rest on the
/// thread pool (or, when the pool has no thread to spare, on the greenlet's own thread with the baton released), and in
/// every way exactly the original's results, counts, positions and file offsets.
/// </summary>
[TestFixture]
public partial class FileReadWriteTests : PatchedHubTest
{
    private const int FileLength = (3 * NoWaitFileIo.InlineLimit) + 1234;
    private string path = null!;
    private byte[] content = null!;

    /// <summary>(offset, length): inside, across page boundaries, up to and past the end, at and after the end, over the inline limit.</summary>
    private static readonly (long Offset, int Length)[] Reads =
    [
        (0, 1000), (4095, 10), (100, 8192), (FileLength - 100, 1000), (FileLength, 10), (FileLength + 4096, 10),
        (0, NoWaitFileIo.InlineLimit), (5, NoWaitFileIo.InlineLimit + 1), (0, FileLength + 10),
    ];

    [TestCase("kill")]
    [TestCase("timeout")]
    public void ALoopOfFileCallsGivesWayAndEndsAtItsNextOtherBlockingPoint(string how)
    {
        // A regular file's reads and writes end by themselves and nothing interrupts them on a thread (or in gevent): a
        // kill or timeout that comes during a copy loop is raised at the loop's next other blocking point, every read
        // and write whole. The loop never parks (cached reads are inline), yet it gives the others a turn when the
        // blocking monitor asks. On a hub of its own thread with the monitor on, so that a loop that never gives way
        // fails this test instead of hanging the run.
        const int Rounds = 400;
        string written = path + ".w";
        int copied = -1, ticksDuringLoop = -1;
        long fileLength = -1;
        bool endedAsAsked = false;
        Exception? failure = null;
        var runner = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
                int ticks = 0;
                var ticker = Green.Spawn(() => { while (true) { Green.Sleep(1); ticks++; } });
                bool asked = false;
                void CopyLoop()
                {
                    using var source = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
                    using var target = new FileStream(written, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
                    var chunk = new byte[64 * 1024];
                    using (Green.Shield())
                        while (!asked) Green.Sleep(1); // the kill or timeout comes meanwhile and stays pending
                    int ticksBefore = ticks;
                    for (copied = 0; copied < Rounds; copied++)
                    {
                        source.Position = 0;
                        source.ReadExactly(chunk);
                        target.Write(chunk);
                        var spin = System.Diagnostics.Stopwatch.StartNew();
                        while (spin.Elapsed.TotalMilliseconds < 0.5) { } // the loop takes ~200 ms: the monitor asks it to yield
                    }
                    ticksDuringLoop = ticks - ticksBefore;
                    Green.Sleep(10_000); // raised here
                }
                var worker = Green.Spawn(() =>
                {
                    if (how == "kill") CopyLoop();
                    else
                    {
                        try
                        {
                            Green.WithTimeout(TimeSpan.FromMilliseconds(20), CopyLoop);
                        }
                        catch (GreenTimeoutException)
                        {
                            endedAsAsked = true;
                        }
                    }
                });
                Green.Sleep(10);
                if (how == "kill") worker.Kill(block: false);
                else Green.Sleep(40);
                asked = true;
                Assert.That(worker.Join(TimeSpan.FromSeconds(20)), Is.True);
                if (how == "kill") endedAsAsked = worker.Successful && worker.Value is GreenletExit;
                fileLength = new FileInfo(written).Length;
                ticker.Kill();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        try
        {
            runner.Start();
            Assert.That(runner.Join(TimeSpan.FromSeconds(60)), Is.True, "the loop gave way and ended");
            Assert.That(failure, Is.Null);
            Assert.That(endedAsAsked, Is.True, $"the greenlet ended by the {how}");
            Assert.That(copied, Is.EqualTo(Rounds), "no read or write of the loop raised it");
            Assert.That(fileLength, Is.EqualTo(Rounds * 64L * 1024), "every write whole");
            Assert.That(ticksDuringLoop, Is.GreaterThan(0), "the loop gave the ticker turns");
        }
        finally
        {
            File.Delete(written);
        }
    }

    [SetUp]
    public void CreateFile()
    {
        path = Path.GetTempFileName();
        content = new byte[FileLength];
        new Random(42).NextBytes(content);
        File.WriteAllBytes(path, content);
    }

    [TearDown]
    public void DeleteFile()
    {
        NoWaitFileIo.Enabled = true;
        File.Delete(path);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void ReadsAtOffsetsReturnWhatTheOriginalReturns(bool inline)
    {
        NoWaitFileIo.Enabled = inline;
        using SafeFileHandle handle = File.OpenHandle(path);
        var results = new List<byte[]>();
        Green.Spawn(() =>
        {
            foreach ((long offset, int length) in Reads)
            {
                var buffer = new byte[length];
                int read = RandomAccess.Read(handle, buffer, offset);
                results.Add(buffer[..read]);
            }
        }).Get();

        for (int i = 0; i < Reads.Length; i++)
        {
            (long offset, int length) = Reads[i];
            int expected = (int)Math.Clamp(FileLength - offset, 0, length);
            Assert.That(results[i], Is.EqualTo(content.AsSpan((int)Math.Min(offset, FileLength), expected).ToArray()), $"read of {length} at {offset}");
        }

        Assert.That(Lseek(handle, 0, 1), Is.Zero, "pread semantics: the kernel's file offset is never moved");
    }

    /// <summary>Runs <paramref name="calls"/> on a greenlet with the inline path on or off, and counts the calls that did
    /// not complete inline: thread-pool round trips, and calls run released at once because a pool start slower than
    /// the grace (a busy moment of this VM) made the pool count as late.</summary>
    private static long PoolWorkDuring(bool inline, Action calls)
    {
        NoWaitFileIo.Enabled = inline;
        Thread.Sleep(2 * PoolClaim.LateWindow); // a pool found late by an earlier test no longer counts as late
        long before = ThreadPool.CompletedWorkItemCount + Volatile.Read(ref PoolClaim.LateCalls);
        Green.Spawn(calls).Get();
        return ThreadPool.CompletedWorkItemCount + Volatile.Read(ref PoolClaim.LateCalls) - before;
    }

    [Test]
    public void CachedReadsDoNotGoToTheThreadPoolAndUncachedOnesDo()
    {
        using SafeFileHandle handle = File.OpenHandle(path);
        _ = RandomAccess.Read(handle, new byte[4096], 0); // in the page cache now (it was just written anyway)

        long Pooled(bool inline) => PoolWorkDuring(inline, () =>
        {
            var buffer = new byte[1024];
            for (int i = 0; i < 500; i++)
            {
                Assert.That(RandomAccess.Read(handle, buffer, i * 7), Is.EqualTo(1024));
            }
        });

        long inlineItems = Pooled(inline: true);
        long pooledItems = Pooled(inline: false);
        TestContext.Out.WriteLine($"500 cached 1 KB reads: {inlineItems} thread-pool work items or late calls inline, {pooledItems} without");
        // The count is sampled: the item that wakes the greenlet for the last read may not be counted yet.
        Assert.That(pooledItems, Is.GreaterThanOrEqualTo(400), "with the inline path off, every read is a thread-pool round trip (or released while the pool is late)");
        Assert.That(inlineItems, Is.LessThan(50), "cached reads complete inline (a few items may be other code's)");
    }

    [Test]
    public void FileStreamPositionsAndCountsMatchTheOriginal()
    {
        static List<long> Script(string file)
        {
            var trace = new List<long>();
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 4096);
            var buffer = new byte[3000];
            foreach (int count in new[] { 10, 3000, 2500, 1 })
            {
                trace.Add(stream.Read(buffer, 0, count));
                trace.Add(stream.Position);
                trace.Add(buffer[0]);
            }

            stream.Seek(-20, SeekOrigin.End);
            trace.Add(stream.Read(buffer, 0, 3000));
            trace.Add(stream.Position);
            stream.Position = 5;
            trace.Add(stream.ReadByte());
            trace.Add(stream.Read(buffer, 0, 0));
            trace.Add(stream.Position);
            return trace;
        }

        List<long> original = Script(path); // this test's thread is not a greenlet: the original runs
        List<long>? patched = null;
        Green.Spawn(() => patched = Script(path)).Get();
        Assert.That(patched, Is.EqualTo(original));
    }

    [Test]
    public void WholeFileReadsInManyGreenletsAreIntact()
    {
        string small = path + ".small";
        File.WriteAllText(small, "Hello from {path}\n" + new string('.', 1000) + "\n");
        try
        {
            var texts = new string[50];
            var blobs = new byte[50][];
            RunInGreenlets(50, i =>
            {
                texts[i] = File.ReadAllText(small);
                blobs[i] = File.ReadAllBytes(path);
            });
            Assert.That(texts, Is.All.EqualTo(File.ReadAllText(small)));
            Assert.That(blobs, Is.All.EqualTo(content));
        }
        finally
        {
            File.Delete(small);
        }
    }

    [Test]
    public void ReadsOfPagesDroppedFromTheCacheStillReturnTheData()
    {
        // Make the second half's pages clean and ask the kernel to drop them: a read across the middle then gets
        // the cached first half inline, EAGAIN at the first dropped page, and the rest from the thread pool.
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Flush(flushToDisk: true);
            _ = PosixFadvise(stream.SafeFileHandle, FileLength / 2, 0, 4 /* POSIX_FADV_DONTNEED */);
        }

        using SafeFileHandle handle = File.OpenHandle(path);
        byte[]? got = null;
        Green.Spawn(() =>
        {
            var buffer = new byte[200_000];
            int read = RandomAccess.Read(handle, buffer, (FileLength / 2) - 100_000);
            got = buffer[..read];
        }).Get();
        Assert.That(got, Is.EqualTo(content.AsSpan((FileLength / 2) - 100_000, 200_000).ToArray()));
    }

    [Test]
    public void AFileWithoutNoWaitSupportIsReadTheUsualWay()
    {
        // /dev/zero is seekable (the original preads it) but answers RWF_NOWAIT with EOPNOTSUPP or reads it;
        // either way the result is the original's.
        using SafeFileHandle zero = File.OpenHandle("/dev/zero");
        var reads = new List<int>();
        byte[] buffer = new byte[4096];
        Green.Spawn(() =>
        {
            buffer[7] = 1;
            reads.Add(RandomAccess.Read(zero, buffer, 0));
            buffer[7] = 1;
            reads.Add(RandomAccess.Read(zero, buffer, 4096));
        }).Get();
        Assert.That(reads, Is.EqualTo(new[] { 4096, 4096 }));
        Assert.That(buffer, Is.All.EqualTo(0));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void WritesAtOffsetsLandWhereTheOriginalPutsThem(bool inline)
    {
        NoWaitFileIo.Enabled = inline;
        byte[] expected = (byte[])content.Clone();
        using (SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite))
        {
            Green.Spawn(() =>
            {
                foreach ((long offset, int length) in new (long, int)[] { (0, 10), (4090, 20), (FileLength - 5, 100), (FileLength + 1000, 300) })
                {
                    byte[] data = Enumerable.Range(0, length).Select(b => (byte)(b + offset)).ToArray();
                    RandomAccess.Write(handle, data, offset);
                    if (offset + length > expected.Length)
                    {
                        Array.Resize(ref expected, (int)(offset + length));
                    }

                    data.CopyTo(expected, offset);
                }
            }).Get();
            Assert.That(Lseek(handle, 0, 1), Is.Zero, "pwrite semantics: the kernel's file offset is never moved");
        }

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(expected));
    }

    [Test]
    public void AppendingFileStreamWritesKeepTheirOrder()
    {
        string log = path + ".log";
        try
        {
            RunInGreenlets(20, i =>
            {
                for (int k = 0; k < 10; k++)
                {
                    lock (content)
                    {
                        File.AppendAllText(log, $"{i:D2}-{k}\n");
                    }
                }
            });
            string[] lines = File.ReadAllLines(log);
            Assert.That(lines, Has.Length.EqualTo(200));
            Assert.That(lines.Distinct().Count(), Is.EqualTo(200));
        }
        finally
        {
            File.Delete(log);
        }
    }

    /// <summary>Legacy code often holds every thread-pool thread in blocking calls. A file call sent to the pool then
    /// waited until the pool grew (200 small writes from greenlets: 4.5–5 s); the greenlet takes such a call back and
    /// runs it on its own thread with the baton released.</summary>
    [Test]
    public void FileReadsAndWritesDoNotWaitForAThreadPoolThatIsHeld()
    {
        using var pool = new HeldThreadPool();
        NoWaitFileIo.Enabled = false; // every read and write goes the way of one that would wait for the disk
        try
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var greenlets = Enumerable.Range(0, 4).Select(g => Green.Spawn(() =>
            {
                string file = $"{path}.{g}";
                using (var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 1))
                {
                    for (int i = 0; i < 100; i++) stream.Write(BitConverter.GetBytes(i));
                }
                using (var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1))
                {
                    var bytes = new byte[4];
                    for (int i = 0; i < 100; i++)
                    {
                        stream.ReadExactly(bytes);
                        Assert.That(BitConverter.ToInt32(bytes), Is.EqualTo(i), $"greenlet {g}, number {i}");
                    }
                }
                File.Delete(file);
            })).ToList();
            Assert.That(Green.JoinAll(greenlets, TimeSpan.FromSeconds(60)), Has.Count.EqualTo(4));
            Assert.That(greenlets.Where(g => !g.Successful).Select(g => g.Exception?.ToString()), Is.Empty);
            // Generous: tens of milliseconds when the calls are taken back; seconds when each waits for the pool.
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(3)), "800 calls with the pool's threads held");
        }
        finally
        {
            NoWaitFileIo.Enabled = true;
        }
    }

    /// <summary>A write offered to a busy pool is not withdrawn by a kill: as on a thread, where nothing interrupts a
    /// file write, it is taken back from the pool and done, and the kill is raised at the next blocking point. (Were it
    /// abandoned to the pool instead, it could land later, over writes made since.)</summary>
    [Test]
    public void AWriteToAFileIsNoCancellationPointEvenWhileThePoolIsBusy()
    {
        string file = path + ".killed";
        NoWaitFileIo.Enabled = false; // the write goes the way of one that would wait for the disk
        try
        {
            using var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
            using (var pool = new HeldThreadPool())
            {
                Thread.Sleep(2 * PoolClaim.LateWindow); // not late yet: the write is offered to the pool, not run released
                bool after = false;
                var writer = Green.Spawn(() =>
                {
                    stream.Write("written"u8);
                    after = true;
                    Thread.Sleep(1000); // the next blocking point raises the kill
                });
                Green.Sleep(0); // the writer offers its write to the pool and waits for a pool thread to start it
                writer.Kill();
                Assert.That((writer.Dead, after), Is.EqualTo((true, true)), "the write finished, then the kill was raised");
            }
            Thread.Sleep(200); // the pool's threads are free again: a write still offered would run now
            Assert.That(File.ReadAllBytes(file), Is.EqualTo("written"u8.ToArray()), "written once, by the greenlet itself");
        }
        finally
        {
            NoWaitFileIo.Enabled = true;
            File.Delete(file);
        }
    }

    /// <summary>Cleanup that runs as a kill or timeout unwinds (a writer's flush in <c>Dispose</c>, an embedded database's
    /// rollback) writes its file as on a thread: the kill, raised again at every cancellation point, does not fail those
    /// writes.</summary>
    [TestCase("kill")]
    [TestCase("timeout")]
    public void CleanupThatUnwindsFromAKillOrTimeoutStillWritesAndReadsItsFile(string how)
    {
        string file = path + ".cleanup";
        NoWaitFileIo.Enabled = false; // every call goes the way of one that would wait for the disk
        try
        {
            File.WriteAllText(file, "");
            string? readBack = null;
            var worker = Green.Spawn(() =>
            {
                try
                {
                    using var writer = new StreamWriter(file);
                    writer.Write("flushed in Dispose");
                    if (how == "kill") Thread.Sleep(10_000);
                    else Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => Thread.Sleep(10_000));
                }
                finally
                {
                    readBack = File.ReadAllText(file);
                }
            });
            Green.Sleep(50);
            if (how == "kill") worker.Kill();
            Green.JoinAll([worker], TimeSpan.FromSeconds(10));
            Assert.That(worker.Dead, Is.True);
            Assert.That(readBack, Is.EqualTo("flushed in Dispose"), "the flush and the read in the finally block ran");
            Assert.That(File.ReadAllText(file), Is.EqualTo("flushed in Dispose"));
        }
        finally
        {
            NoWaitFileIo.Enabled = true;
            File.Delete(file);
        }
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void CleanupThatHoldsTheBatonLongAfterAKillStillWritesAndReadsItsFile(string how)
    {
        // The yield the blocking monitor asks of a greenlet that held the baton too long (taken at the start of a file
        // call) raised the kill or timeout again there: LiteDB's rollback after a timed-out commit lost its write, and
        // its lock stayed held. On a hub of its own, with the monitor on and a ticker waiting.
        string file = path + ".slowcleanup";
        string? readBack = null;
        bool ended = false;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
            var ticker = Green.Spawn(() => { while (true) Green.Sleep(5); });
            var worker = Green.Spawn(() =>
            {
                try
                {
                    if (how == "kill") Thread.Sleep(10_000);
                    else Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => Thread.Sleep(10_000));
                }
                catch (Exception e) when (e is GreenletExit or GreenTimeoutException)
                {
                    var busy = System.Diagnostics.Stopwatch.StartNew();
                    while (busy.ElapsedMilliseconds < 300) { } // clean-up that computes: the monitor asks it to yield
                    File.WriteAllText(file, "written by the clean-up");
                    readBack = File.ReadAllText(file);
                    throw;
                }
            });
            Green.Sleep(50);
            if (how == "kill") worker.Kill(block: false);
            ended = worker.Join(TimeSpan.FromSeconds(10));
            ticker.Kill();
        }) { IsBackground = true };
        try
        {
            runner.Start();
            Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
            Assert.That(ended, Is.True);
            Assert.That(readBack, Is.EqualTo("written by the clean-up"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [TestCase("chunks")]
    [TestCase("zone file")]
    public void AReadOfARegularFileIsNoCancellationPoint(string what)
    {
        // A library reads a structure in several calls and keeps state across them: Lucene fills its read buffer in
        // chunks and sets the buffer's bounds after the last, so a kill raised at a later chunk left a half-overwritten
        // buffer behind. CoreLib too reads files inside the caller's operation: DateTime.Now loads the zone file the
        // first time, and a kill raised there inside Lucene's commit threw away every document the commit was flushing.
        // A thread's interrupt never stops a file read.
        var buffer = new byte[FileLength];
        bool read = false;
        var worker = Green.Spawn(() =>
        {
            using (Green.Shield()) Green.Sleep(50); // the kill comes meanwhile and stays pending, not raised yet
            if (what == "chunks")
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
                for (int at = 0; at < FileLength; at += 4096) stream.ReadExactly(buffer, at, Math.Min(4096, FileLength - at));
            }
            else
            {
                TimeZoneInfo.ClearCachedData();
                _ = TimeZoneInfo.FindSystemTimeZoneById("Europe/Paris"); // reads /usr/share/zoneinfo/Europe/Paris
            }
            read = true;
            Thread.Sleep(10_000); // the kill is raised here
        });
        Green.Sleep(10);
        worker.Kill(block: false);
        Assert.That(worker.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(read, Is.True, "every read completed; the kill came at the sleep after them");
        Assert.That(worker.Successful, Is.True, "the greenlet ended killed");
        if (what == "chunks") Assert.That(buffer, Is.EqualTo(content));
    }

    [Test]
    public void ADeleteOfALargeFileIsNoCancellationPoint()
    {
        // A delete changes the file system, as a write does: a scratch file's delete in a finally raised the kill that had
        // come during the writes before it (they raise nothing), and the file stayed.
        string big = path + ".big";
        File.WriteAllBytes(big, new byte[2 << 20]); // large enough that its delete runs with the baton released
        bool deleted = false;
        var worker = Green.Spawn(() =>
        {
            using (Green.Shield()) Green.Sleep(50); // the kill comes meanwhile and stays pending, not raised yet
            File.Delete(big);
            deleted = true;
            Thread.Sleep(10_000); // the kill is raised here
        });
        Green.Sleep(10);
        worker.Kill(block: false);
        Assert.That(worker.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That((deleted, File.Exists(big)), Is.EqualTo((true, false)), "the file was deleted; the kill came at the sleep after it");
        File.Delete(big);
    }

    [Test]
    public void AReadThatWaitsParksOnlyItsGreenletAndAKillEndsIt()
    {
        // A FIFO is not seekable: the original reads it with read(), so the read waits on the hub's reactor for a
        // writer; the greenlet parks, the hub goes on, and a kill ends the greenlet.
        string fifo = path + ".fifo";
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        try
        {
            // Read-write, so that opening does not wait for a writer (Linux allows it for FIFOs).
            using var stream = new FileStream(fifo, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, bufferSize: 0);
            int ticks = 0;
            var ticker = Green.Spawn(() =>
            {
                while (true)
                {
                    Green.Sleep(TimeSpan.FromMilliseconds(5));
                    ticks++;
                }
            });
            bool returned = false;
            var reader = Green.Spawn(() =>
            {
                _ = stream.Read(new byte[100], 0, 100);
                returned = true;
            });
            Green.Sleep(TimeSpan.FromMilliseconds(200));
            Assert.That(ticks, Is.GreaterThan(5), "the hub kept running while the read waited");
            reader.Kill(block: true, timeout: TimeSpan.FromSeconds(10));
            Assert.That(reader.Dead, Is.True);
            Assert.That(returned, Is.False);
            ticker.Kill();

            // Nothing read on behalf of the killed greenlet: the next reader gets the data.
            stream.Write(new byte[] { 1, 2, 3 });
            Assert.That(stream.Read(new byte[100], 0, 100), Is.EqualTo(3));
        }
        finally
        {
            File.Delete(fifo);
        }
    }

    [Test]
    public void FileCopyAndAMoveAcrossFileSystemsLetTheHubRunWhileTheyCopy()
    {
        // The whole-file copy is native code (copy_file_range) that no read or write funnel sees: it runs with the
        // baton released, so another greenlet runs while it copies. Counted, not timed: the observer's turns while a
        // copy is in progress are zero when the copy holds the hub.
        string big = path + ".big";
        File.WriteAllBytes(big, new byte[32 << 20]);
        string shm = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(); // tmpfs: another file system, usually
        try
        {
            foreach (bool move in new[] { false, true })
            {
                bool copying = false, done = false;
                int turnsDuringCopies = 0;
                var observer = Green.Spawn(() =>
                {
                    while (!done)
                    {
                        if (copying) turnsDuringCopies++;
                        Green.Sleep(TimeSpan.FromMilliseconds(1));
                    }
                });
                var copier = Green.Spawn(() =>
                {
                    for (int i = 0; i < 10 && turnsDuringCopies == 0; i++)
                    {
                        string target = Path.Combine(shm, $"greenruntime-copy-{Guid.NewGuid():N}");
                        copying = true;
                        if (move)
                        {
                            File.Copy(big, big + ".moving"); // its own copy time is not counted below
                            copying = false;
                            Green.Sleep(TimeSpan.FromMilliseconds(2));
                            copying = true;
                            File.Move(big + ".moving", target);
                        }
                        else
                        {
                            File.Copy(big, target);
                        }
                        copying = false;
                        Assert.That(new FileInfo(target).Length, Is.EqualTo(32 << 20));
                        File.Delete(target);
                    }
                    done = true;
                });
                Green.JoinAll([copier, observer], raiseError: true);
                Assert.That(turnsDuringCopies, Is.GreaterThan(0), move ? "File.Move across file systems held the hub" : "File.Copy held the hub");
            }
            // The original's exceptions, raised on the greenlet: no overwrite of an existing file, a missing source.
            Assert.That(() => File.Copy(big, path), Throws.TypeOf<IOException>().With.Message.Contains(path));
            Assert.That(() => File.Copy(big + ".missing", big + ".copy"), Throws.TypeOf<FileNotFoundException>());
            File.Copy(big, path, overwrite: true);
            Assert.That(new FileInfo(path).Length, Is.EqualTo(32 << 20));
        }
        finally
        {
            File.Delete(big);
            File.Delete(big + ".moving");
        }
    }

    [LibraryImport("libc", EntryPoint = "mkfifo", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int MkFifo(string path, int mode);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint ReadFd(int fd, byte* buffer, nint count);

    private static unsafe long ReadFd(int fd, byte[] buffer, int count)
    {
        fixed (byte* p = buffer) return ReadFd(fd, p, count);
    }

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long Lseek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(SafeFileHandle fd, long offset, long length, int advice);
}
