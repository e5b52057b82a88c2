using System.Runtime.InteropServices;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Closing a file handle a greenlet wrote much through: ext4 starts the writeback of a truncated and rewritten
/// file's pages inside <c>close()</c>, which now runs with the hub's baton released.</summary>
public partial class FileReadWriteTests
{
    /// <summary>A <c>FileMode.Create</c> over an existing file, 128 MiB written, then <c>Dispose</c>: ext4's
    /// <c>auto_da_alloc</c> flushes inside the close (17 ms for 64 MiB, 0.33 s for 1 GiB here), which held the hub.
    /// Counted, not timed: the observer's turns while the close is in progress are zero when it holds the hub. Only where
    /// the temporary directory is on ext4, the file system known to do this.</summary>
    [TestCase("FileStream")]
    [TestCase("SetLength(0)")]
    public void ClosingARewrittenLargeFileLetsTheHubRun(string how)
    {
        if (FileSystemType(Path.GetTempPath()) != Ext4Magic)
            Assert.Ignore("The temporary directory is not on ext4, whose close() flushes a truncated and rewritten file.");
        string big = path + ".big";
        var chunk = new byte[1 << 20];
        new Random(7).NextBytes(chunk);
        try
        {
            using (var fs = new FileStream(big, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
                for (int m = 0; m < 16; m++) fs.Write(chunk);
            bool inClose = false, done = false;
            int turnsDuringCloses = 0;
            var observer = Green.Spawn(() =>
            {
                while (!done)
                {
                    if (inClose) turnsDuringCloses++;
                    Green.Sleep(TimeSpan.FromMilliseconds(1));
                }
            });
            var worker = Green.Spawn(() =>
            {
                for (int i = 0; i < 5 && turnsDuringCloses == 0; i++)
                {
                    var fs = how == "FileStream"
                        ? new FileStream(big, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0)
                        : new FileStream(big, FileMode.Open, FileAccess.ReadWrite, FileShare.None, bufferSize: 0);
                    if (how != "FileStream") fs.SetLength(0);
                    for (int m = 0; m < 128; m++) fs.Write(chunk);
                    inClose = true;
                    fs.Dispose();
                    inClose = false;
                    Assert.That(new FileInfo(big).Length, Is.EqualTo(128L << 20));
                }
                done = true;
            });
            Green.JoinAll([worker, observer], raiseError: true);
            Assert.That(turnsDuringCloses, Is.GreaterThan(0), "the close of a rewritten 128 MiB file held the hub");
        }
        finally
        {
            File.Delete(big);
        }
    }

    /// <summary>A close run released ends as the original's: the file is whole, the handle closed (its descriptor reused
    /// at once by the next open), a kill that came meanwhile is raised at the next blocking point, not by the close.</summary>
    [Test]
    public void AReleasedCloseEndsAsOnAThread()
    {
        string big = path + ".big";
        var chunk = new byte[1 << 20];
        new Random(8).NextBytes(chunk);
        try
        {
            bool closed = false, killSent = false;
            int chunks = 0;
            Exception? raised = null;
            Greenlet writer = null!;
            writer = Green.Spawn(() =>
            {
                Green.Spawn(() =>
                {
                    writer.Kill(block: false);
                    killSent = true;
                });
                var fs = new FileStream(big, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
                // File writes raise no kill: the killer's kill is pending once it ran (a 1 MiB write parks or is released).
                for (; chunks < 4 || (!killSent && chunks < 64); chunks++) fs.Write(chunk);
                fs.Dispose(); // no cancellation point: the kill stays pending
                closed = true;
                try
                {
                    Green.Sleep(1000);
                }
                catch (GreenletExit e)
                {
                    raised = e;
                    throw;
                }
            });
            Green.JoinAll([writer]);
            Assert.That(killSent, Is.True);
            Assert.That(closed, Is.True, "the close raised the pending kill");
            Assert.That(raised, Is.InstanceOf<GreenletExit>());
            var back = File.ReadAllBytes(big);
            Assert.That(back.Length, Is.EqualTo((long)chunks << 20));
            Assert.That(back.AsSpan((chunks - 1) << 20).SequenceEqual(chunk), Is.True);
            using var again = new FileStream(big, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
            Assert.That(again.Length, Is.EqualTo((long)chunks << 20), "the closed handle kept no lock");
        }
        finally
        {
            File.Delete(big);
        }
    }

    private const long Ext4Magic = 0xEF53;

    /// <summary>The file system type (<c>statfs</c>'s <c>f_type</c>, the first field on the 64-bit Linux ABIs) of
    /// <paramref name="directory"/>, 0 when unknown.</summary>
    private static unsafe long FileSystemType(string directory)
    {
        long* buffer = stackalloc long[32];
        return StatFs(directory, buffer) == 0 ? buffer[0] : 0;
    }

    [LibraryImport("libc", EntryPoint = "statfs", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatFs(string path, long* buffer);
}
