using System.Diagnostics;
using GreenRuntime.Cooperative;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Small buffered writes to files on ext4, which refuses RWF_NOWAIT for them: plain pwrites on the greenlet
/// while the device keeps up, the usual way (thread pool, or released) for a back-off after one that did not.</summary>
public partial class FileReadWriteTests
{
    /// <summary>A new, empty file next to <see cref="path"/>, opened for reading and writing; the test is skipped unless
    /// the temporary directory is on ext4.</summary>
    private SafeFileHandle OpenExt4File(out string file, FileOptions options = FileOptions.None)
    {
        string directory = Path.GetDirectoryName(path)!;
        string? type = File.ReadLines("/proc/self/mountinfo")
            .Select(line => line.Split(' '))
            .Select(fields => (Mount: fields[4], Type: fields[Array.IndexOf(fields, "-") + 1]))
            .Where(m => directory == m.Mount || directory.StartsWith(m.Mount.TrimEnd('/') + "/", StringComparison.Ordinal))
            .OrderByDescending(m => m.Mount.Length)
            .Select(m => m.Type)
            .FirstOrDefault();
        Assume.That(type, Is.EqualTo("ext4"), $"the temporary directory {directory} is not on ext4");
        file = path + ".ext4";
        return File.OpenHandle(file, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, options);
    }

    /// <summary>ext4 answers RWF_NOWAIT with EOPNOTSUPP for buffered writes, so each went to the thread pool: ASP.NET Core
    /// MVC's output buffering, ~170 small writes to a file in /tmp per 330 KB response, took ~2× plain Kestrel's CPU.</summary>
    [Test]
    public void SmallWritesToAnExt4FileDoNotGoToTheThreadPool()
    {
        using SafeFileHandle handle = OpenExt4File(out string file);
        try
        {
            // A write this busy VM happens to preempt for 2 ms would back the device off and send the rest to the pool.
            NoWaitFileIo.StallThreshold = 10 * Stopwatch.Frequency;
            var expected = new byte[250 * 1024];
            long Pooled(bool inline, byte fill) => PoolWorkDuring(inline, () =>
            {
                var buffer = new byte[1024];
                for (int i = 0; i < 250; i++)
                {
                    Array.Fill(buffer, (byte)(fill + i));
                    RandomAccess.Write(handle, buffer, i * 1024L);
                    buffer.CopyTo(expected, i * 1024);
                }
            });

            long inlineItems = Pooled(inline: true, fill: 1);
            byte[] inlineWritten = File.ReadAllBytes(file);
            Assert.That(inlineWritten, Is.EqualTo(expected), "the inline writes landed where the original puts them");
            long pooledItems = Pooled(inline: false, fill: 2);
            TestContext.Out.WriteLine($"250 writes of 1 KB on ext4: {inlineItems} thread-pool work items or late calls inline, {pooledItems} without");
            Assert.That(pooledItems, Is.GreaterThanOrEqualTo(200), "with the inline path off, every write is a thread-pool round trip (or released while the pool is late)");
            Assert.That(inlineItems, Is.LessThan(50), "small ext4 writes complete inline (a few items may be other code's)");
            Assert.That(File.ReadAllBytes(file), Is.EqualTo(expected));
        }
        finally
        {
            NoWaitFileIo.ResetDiskWriteGuards();
            handle.Dispose();
            File.Delete(file);
        }
    }

    [Test]
    public void LargeAndWriteThroughWritesToAnExt4FileStillGoTheUsualWay()
    {
        // Over the inline limit, or on an O_SYNC handle (whose writes wait for the disk inside the call), a write goes to
        // the thread pool (or released, when the pool is late): each is at least one work item or late call.
        using SafeFileHandle handle = OpenExt4File(out string file);
        try
        {
            var large = new byte[NoWaitFileIo.DiskWriteLimit + 1];
            Assert.That(PoolWorkDuring(true, () =>
            {
                for (int i = 0; i < 20; i++) RandomAccess.Write(handle, large, (long)i * large.Length);
            }), Is.GreaterThanOrEqualTo(15), "writes over the limit (the count is sampled: the last may not be counted yet)");
            handle.Dispose();
            using SafeFileHandle synced = File.OpenHandle(file, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, FileOptions.WriteThrough);
            Assert.That(PoolWorkDuring(true, () =>
            {
                for (int i = 0; i < 20; i++) RandomAccess.Write(synced, new byte[100], i * 100L);
            }), Is.GreaterThanOrEqualTo(15), "writes to an O_SYNC handle");
        }
        finally
        {
            handle.Dispose();
            File.Delete(file);
        }
    }

    /// <summary>A write that took longer than the stall threshold (dirty-page throttling, a journal wait) sends the
    /// device's writes the usual way for a back-off of 1 s, doubled when the next inline write stalls too; on the test's
    /// own clock, with every write counting as slow while the threshold is below zero, and as sleeping in the kernel while
    /// the thread's voluntary context switches read as changed.</summary>
    [Test]
    public void ASlowWriteSendsTheDevicesWritesTheUsualWayForABackOffThatDoublesWhileItKeepsHappening()
    {
        using SafeFileHandle handle = OpenExt4File(out string file);
        NoWaitFileIo.ResetDiskWriteGuards(); // a back-off an earlier test's write began on the real clock ends
        long now = Stopwatch.GetTimestamp();
        long second = Stopwatch.Frequency;
        try
        {
            NoWaitFileIo.Clock = () => Volatile.Read(ref now);
            NoWaitFileIo.StallThreshold = -1; // every inline write is slow
            long switches = 0;
            NoWaitFileIo.VoluntarySwitches = () => Interlocked.Increment(ref switches); // and sleeps in the kernel
            long stalls = Volatile.Read(ref NoWaitFileIo.DiskWriteStalls);
            var buffer = new byte[512];
            void Write(int times) => Green.Spawn(() =>
            {
                for (int i = 0; i < times; i++) RandomAccess.Write(handle, buffer, i * 512L);
            }).Get();

            Assert.That(PoolWorkDuring(true, () => RandomAccess.Write(handle, buffer, 0)), Is.LessThan(5), "the first write went inline");
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(1), "and stalled");
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.True);
            Assert.That(PoolWorkDuring(true, () =>
            {
                for (int i = 0; i < 50; i++) RandomAccess.Write(handle, buffer, i * 512L);
            }), Is.GreaterThanOrEqualTo(40), "during the back-off every write goes the usual way");
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(1), "none went inline");

            Volatile.Write(ref now, now + second + 1); // the back-off (1 s) is over
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.False);
            Write(1); // inline again, and slow again at once (within a tenth of the back-off): 2 s
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(2));
            Volatile.Write(ref now, now + (3 * second / 2));
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.True, "the second back-off is twice as long");
            Write(10);
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(2), "none went inline");
            Volatile.Write(ref now, now + (second / 2) + 1);
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.False);

            NoWaitFileIo.StallThreshold = second; // the device keeps up again
            Assert.That(PoolWorkDuring(true, () =>
            {
                for (int i = 0; i < 50; i++) RandomAccess.Write(handle, buffer, i * 512L);
            }), Is.LessThan(20), "inline again");
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(2));

            NoWaitFileIo.StallThreshold = -1;
            Volatile.Write(ref now, now + (10 * second)); // long after the last back-off ended: back to 1 s
            Write(1);
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(3));
            Volatile.Write(ref now, now + second + 1);
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.False, "a stall long after the last one backs off for 1 s");
            Volatile.Write(ref now, now + (second / 2));
            Write(1); // half a second after the back-off ended: a stall of its own, not the same slowness
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(4));
            Volatile.Write(ref now, now + second + 1);
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.False, "1 s again, not doubled");

            // Slow without sleeping in the kernel: the thread was preempted (a saturated server), the device is not slow.
            NoWaitFileIo.VoluntarySwitches = () => 7;
            Write(10);
            Assert.That(NoWaitFileIo.DiskWriteStalls - stalls, Is.EqualTo(4), "a preempted write is no stall");
            Assert.That(NoWaitFileIo.IsBackedOff(handle), Is.False);
        }
        finally
        {
            NoWaitFileIo.ResetDiskWriteGuards();
            handle.Dispose();
            File.Delete(file);
        }
    }
}
