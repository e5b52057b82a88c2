using GreenRuntime.Cooperative;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Files on tmpfs, which refuses RWF_NOWAIT but never waits for a device: read and written inline like cached
/// data, with the original's results.</summary>
public partial class FileReadWriteTests
{
    /// <summary>A new file on a tmpfs mount (the test is skipped where none is mounted), holding <see cref="content"/>.</summary>
    private string CreateTmpfsFile()
    {
        string? mount = File.ReadLines("/proc/mounts")
            .Select(line => line.Split(' '))
            .Where(fields => fields.Length > 2 && fields[2] == "tmpfs" && fields[1] is "/dev/shm" or "/run" or "/tmp")
            .Select(fields => fields[1])
            .FirstOrDefault(dir => Directory.Exists(dir) && IsWritable(dir));
        Assume.That(mount, Is.Not.Null, "no writable tmpfs mount");
        string file = Path.Combine(mount!, $"greenruntime-test-{Guid.NewGuid():N}");
        File.WriteAllBytes(file, content);
        return file;

        static bool IsWritable(string dir)
        {
            try
            {
                string probe = Path.Combine(dir, Path.GetRandomFileName());
                File.WriteAllText(probe, "");
                File.Delete(probe);
                return true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    [Test]
    public void TmpfsReadsAndWritesDoNotGoToTheThreadPool()
    {
        // tmpfs answers RWF_NOWAIT with EOPNOTSUPP, so every call went to the thread pool: 5-10× a thread's cost.
        string file = CreateTmpfsFile();
        try
        {
            using SafeFileHandle handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
            long Pooled(bool inline) => PoolWorkDuring(inline, () =>
            {
                var buffer = new byte[1024];
                for (int i = 0; i < 250; i++)
                {
                    Assert.That(RandomAccess.Read(handle, buffer, i * 7), Is.EqualTo(1024));
                    RandomAccess.Write(handle, buffer, FileLength + (i * 1024L));
                }
            });

            long inlineItems = Pooled(inline: true);
            long pooledItems = Pooled(inline: false);
            TestContext.Out.WriteLine($"250 reads and 250 writes of 1 KB on tmpfs: {inlineItems} thread-pool work items or late calls inline, {pooledItems} without");
            Assert.That(pooledItems, Is.GreaterThanOrEqualTo(400), "with the inline path off, every call is a thread-pool round trip (or released while the pool is late)");
            Assert.That(inlineItems, Is.LessThan(50), "tmpfs calls complete inline (a few items may be other code's)");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    public void ProcfsReadsDoNotGoToTheThreadPoolAndGiveTheOriginalsText()
    {
        // procfs refuses RWF_NOWAIT too, and the kernel writes its files as they are read: Process.GetProcesses() and a
        // process tree's kill read a few files per process, each a thread-pool round trip (6-10x their cost on threads).
        string Stat() => File.ReadAllText("/proc/self/stat").Split(' ')[0]; // the pid, which does not change
        string expected = Stat();
        long Pooled(bool inline) => PoolWorkDuring(inline, () =>
        {
            for (int i = 0; i < 250; i++) Assert.That(Stat(), Is.EqualTo(expected));
        });

        long inlineItems = Pooled(inline: true);
        long pooledItems = Pooled(inline: false);
        TestContext.Out.WriteLine($"250 reads of /proc/self/stat: {inlineItems} thread-pool work items or late calls inline, {pooledItems} without");
        Assert.That(pooledItems, Is.GreaterThanOrEqualTo(200), "with the inline path off, every read is a thread-pool round trip (or released while the pool is late)");
        Assert.That(inlineItems, Is.LessThan(50), "procfs reads complete inline (a few items may be other code's)");
    }

    [Test]
    public void TmpfsReadsAndWritesOnAGreenletGiveTheOriginalsResults()
    {
        string file = CreateTmpfsFile();
        try
        {
            List<byte[]> Script(bool onGreenlet)
            {
                File.WriteAllBytes(file, content);
                var results = new List<byte[]>();
                void Run()
                {
                    using SafeFileHandle handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
                    foreach ((long offset, int length) in Reads)
                    {
                        var buffer = new byte[length];
                        int read = RandomAccess.Read(handle, buffer, offset);
                        results.Add(buffer[..read]);
                    }

                    RandomAccess.Write(handle, new byte[] { 1, 2, 3 }, 4094);
                    RandomAccess.Write(handle, Enumerable.Repeat((byte)9, 5000).ToArray(), FileLength + 100);
                    using var stream = new FileStream(handle, FileAccess.ReadWrite);
                    stream.Position = 4000;
                    var tail = new byte[300];
                    results.Add(tail[..stream.Read(tail)]);
                    stream.Write([7, 7, 7]);
                    results.Add(BitConverter.GetBytes(stream.Position));
                }

                if (onGreenlet) Green.Spawn(Run).Get(); else Run();
                results.Add(File.ReadAllBytes(file));
                return results;
            }

            Assert.That(Script(onGreenlet: true), Is.EqualTo(Script(onGreenlet: false)));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
