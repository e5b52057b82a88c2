using GreenRuntime.Cooperative;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>FileStream.Flush(true) and RandomAccess.FlushToDisk (fsync) on greenlets: run the way a file write that must
/// wait runs, so the hub runs the others meanwhile, with the original's results and exceptions.</summary>
public partial class FileReadWriteTests
{
    /// <summary>An fsync waits for the disk to take every dirty page of the file (52–56 ms for 64 MiB here), and it used
    /// to do so holding the hub: a ticker greenlet got no turn during it. Counted, not timed: the ticker's turns while a
    /// flush is in progress are zero when the flush holds the hub.</summary>
    [Test]
    public void AFlushToDiskLetsTheHubRunWhileTheDiskSyncs()
    {
        string file = path + ".synced";
        var data = new byte[32 << 20];
        new Random(7).NextBytes(data);
        try
        {
            bool flushing = false, done = false;
            int turnsDuringFlushes = 0, flushes = 0;
            var ticker = Green.Spawn(() =>
            {
                while (!done)
                {
                    if (flushing) turnsDuringFlushes++;
                    Green.Sleep(TimeSpan.FromMilliseconds(1));
                }
            });
            var flusher = Green.Spawn(() =>
            {
                try
                {
                    // A few tries: a sync the disk happens to finish within a tick proves nothing either way.
                    for (int i = 0; i < 5 && turnsDuringFlushes == 0; i++)
                    {
                        using var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
                        stream.Write(data); // dirty pages for the sync to wait for
                        flushing = true;
                        stream.Flush(flushToDisk: true);
                        flushing = false;
                        flushes++;
                    }
                }
                finally
                {
                    done = true;
                }
            });
            Green.JoinAll([flusher, ticker], raiseError: true);
            TestContext.Out.WriteLine($"{flushes} flush(es) of 32 MiB, ticker turns during them: {turnsDuringFlushes}");
            Assert.That(turnsDuringFlushes, Is.GreaterThan(0), "FileStream.Flush(true) held the hub for the whole sync");
            Assert.That(File.ReadAllBytes(file).AsSpan().SequenceEqual(data), Is.True, "the file holds what was written");
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Whatever the disk's speed, each sync on a greenlet is a thread-pool work item (or runs released while the
    /// pool counts as late), never a call on the greenlet's thread with the baton held.</summary>
    [Test]
    public void FlushesToDiskOnAGreenletGoOffTheHub()
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, bufferSize: 0);
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        stream.Write("dirty"u8);
        long offHub = PoolWorkDuring(inline: true, () =>
        {
            for (int i = 0; i < 25; i++)
            {
                stream.Flush(flushToDisk: true);
                RandomAccess.FlushToDisk(handle);
            }
        });
        TestContext.Out.WriteLine($"50 syncs: {offHub} thread-pool work items or late calls");
        // The count is sampled: the item that wakes the greenlet for the last sync may not be counted yet.
        Assert.That(offHub, Is.GreaterThanOrEqualTo(40), "every sync leaves the greenlet's thread (a few items may be other code's)");
    }

    /// <summary>The same script on a greenlet and on a plain thread: the same file content, and the same exceptions (a
    /// disposed stream or handle), and no exception where the original has none (a read-only stream, whose Flush(true)
    /// syncs nothing; a read-only handle; /dev/null, whose fsync fails with EINVAL, which the original ignores).</summary>
    [Test]
    public void FlushesToDiskOnAGreenletHaveTheOriginalsResultsAndExceptions()
    {
        static List<string> Script(string file)
        {
            var outcomes = new List<string>();
            void Record(string what, Action call)
            {
                try
                {
                    call();
                    outcomes.Add($"{what}: ok");
                }
                catch (Exception e)
                {
                    outcomes.Add($"{what}: {e.GetType().Name}: {e.Message}");
                }
            }

            var writer = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.ReadWrite);
            writer.Write("first, "u8);
            Record("buffered write, Flush(true)", () => writer.Flush(flushToDisk: true));
            writer.Write("second"u8);
            Record("buffered write, Dispose", writer.Dispose);
            Record("disposed stream, Flush(true)", () => writer.Flush(flushToDisk: true));
            outcomes.Add($"content: {File.ReadAllText(file)}");

            using (var reader = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                Record("read-only stream, Flush(true)", () => reader.Flush(flushToDisk: true));
            using (SafeFileHandle readOnly = File.OpenHandle(file, FileMode.Open, FileAccess.Read))
                Record("read-only handle, FlushToDisk", () => RandomAccess.FlushToDisk(readOnly));
            using (SafeFileHandle devNull = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Write))
                Record("/dev/null, FlushToDisk", () => RandomAccess.FlushToDisk(devNull));
            SafeFileHandle closed = File.OpenHandle(file, FileMode.Open, FileAccess.Write);
            closed.Dispose();
            Record("closed handle, FlushToDisk", () => RandomAccess.FlushToDisk(closed));
            return outcomes;
        }

        string onThread = path + ".thread", onGreenlet = path + ".greenlet";
        try
        {
            List<string> expected = null!;
            var thread = new Thread(() => expected = Script(onThread));
            thread.Start();
            thread.Join();
            List<string> actual = Green.Spawn(() => Script(onGreenlet)).Get();
            TestContext.Out.WriteLine(string.Join(Environment.NewLine, expected));
            Assert.That(actual, Is.EqualTo(expected));
            Assert.That(expected, Does.Contain("content: first, second"));
            Assert.That(expected.Last(), Does.StartWith("closed handle, FlushToDisk: ObjectDisposedException"));
        }
        finally
        {
            File.Delete(onThread);
            File.Delete(onGreenlet);
        }
    }

    /// <summary>A sync is no cancellation point, as a write is not: a kill that comes while it waits for a pool thread is
    /// raised at the greenlet's next blocking point, once the sync has been done (a commit that was made durable is not
    /// reported as failed).</summary>
    [Test]
    public void AFlushToDiskIsNoCancellationPointEvenWhileThePoolIsBusy()
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.Read, bufferSize: 0);
        using (new HeldThreadPool())
        {
            Thread.Sleep(2 * PoolClaim.LateWindow); // not late yet: the sync is offered to the pool, not run released
            bool after = false;
            var syncer = Green.Spawn(() =>
            {
                stream.Flush(flushToDisk: true);
                after = true;
                Thread.Sleep(1000); // the next blocking point raises the kill
            });
            Green.Sleep(0); // the syncer offers its sync to the pool and waits for a pool thread to start it
            syncer.Kill();
            Assert.That((syncer.Dead, after), Is.EqualTo((true, true)), "the sync finished, then the kill was raised");
        }
    }
}
