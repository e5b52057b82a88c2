using System.Diagnostics;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Opening and deleting files: a FIFO's open, which waits for the other end, and the truncation or deletion of a
/// large file, which frees its blocks inside the call, run with the hub's baton released; the rest as before, with the
/// original's results and exceptions.</summary>
public partial class FileReadWriteTests
{
    /// <summary>A greenlet opening a FIFO's read end blocked the hub in <c>open()</c>, so the greenlet that was to open the
    /// write end never ran: the hub was deadlocked for good. On threads both opens complete, and now on greenlets too. On a
    /// hub of its own thread with a bounded join, so that the old deadlock fails the test instead of hanging the run. The
    /// reader also as a stackless greenlet, whose synchronous code runs on a carrier of its own too.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void TwoGreenletsOfOneHubOpenTheTwoEndsOfAFifo(bool stacklessReader)
    {
        string fifo = path + ".fifo";
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        string? received = null;
        Exception? failure = null;
        var runner = new Thread(() =>
        {
            try
            {
                using var hub = new Hub();
                void Read()
                {
                    using var stream = new StreamReader(new FileStream(fifo, FileMode.Open, FileAccess.Read));
                    received = stream.ReadToEnd();
                }
                var reader = stacklessReader
                    ? Green.SpawnAsync(() =>
                    {
                        Read();
                        return Task.CompletedTask;
                    })
                    : Green.Spawn(Read);
                var writer = Green.Spawn(() =>
                {
                    using var stream = new StreamWriter(new FileStream(fifo, FileMode.Open, FileAccess.Write));
                    stream.Write("through the fifo");
                });
                Green.JoinAll([reader, writer], raiseError: true);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        try
        {
            runner.Start();
            bool finished = runner.Join(TimeSpan.FromSeconds(10));
            Assert.That(finished, Is.True, "the hub is deadlocked: the read end's open blocks it, so the write end's greenlet never runs");
            Assert.That(failure, Is.Null);
            Assert.That(received, Is.EqualTo("through the fifo"));
        }
        finally
        {
            ReleaseStuckFifoOpens(fifo, runner);
            File.Delete(fifo);
        }
    }

    /// <summary>At the carrier cap with every carrier inside a released call (nothing parked to run the hub meanwhile), a
    /// FIFO open waits for a carrier before it starts. That wait was shielded: a kill or timeout could not end it, and
    /// the open went on once a carrier came back, then waited for a writer. Now the kill or timeout ends it at once, while
    /// every carrier is still taken, and nothing was opened: a non-blocking open of the write end finds no reader.</summary>
    [TestCase("timeout")]
    [TestCase("kill")]
    public void AKillOrTimeoutEndsAFifoOpensWaitForACarrier(string how)
    {
        string fifo = path + ".fifo";
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        using var carriersBack = new ManualResetEventSlim();
        bool endedWhileTaken = false, opened = false;
        Exception? raised = null, failure = null;
        var runner = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxCarriers = 2, MaxBlockingTime = null });
                void TakeACarrier() => Green.RunBlocking(() => carriersBack.Wait(TimeSpan.FromSeconds(5)));
                void Open()
                {
                    try
                    {
                        using var stream = new FileStream(fifo, FileMode.Open, FileAccess.Read);
                        opened = true;
                    }
                    catch (Exception e)
                    {
                        raised = e;
                        endedWhileTaken = !carriersBack.IsSet;
                        throw;
                    }
                }
                if (how == "timeout")
                {
                    // Two greenlets keep the two carriers in released calls: the main greenlet's open finds no stand-in.
                    var taking = new[] { Green.Spawn(TakeACarrier), Green.Spawn(TakeACarrier) };
                    Green.Sleep(100);
                    try
                    {
                        Green.WithTimeout(TimeSpan.FromMilliseconds(100), Open);
                    }
                    catch (GreenTimeoutException)
                    {
                    }
                    carriersBack.Set();
                    Green.JoinAll(taking, raiseError: true);
                }
                else
                {
                    // The opener keeps one carrier, a greenlet the other in a released call, and the main greenlet's
                    // released call (whose thread counts against no cap) leaves no parked greenlet to stand in; a spawned
                    // greenlet could not start at the cap, so the opener is there first. Killed from another thread.
                    bool go = false;
                    var opener = Green.Spawn(() =>
                    {
                        while (!go) Green.Sleep(5);
                        Open();
                    }, "opener");
                    var taker = Green.Spawn(TakeACarrier);
                    Green.Sleep(100);
                    go = true;
                    var killer = Task.Run(() =>
                    {
                        Thread.Sleep(300);
                        opener.Kill(timeout: TimeSpan.FromSeconds(3));
                        carriersBack.Set();
                    });
                    TakeACarrier();
                    Green.JoinAll([opener, taker]);
                    Green.Wait(killer);
                }
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        try
        {
            runner.Start();
            Assert.That(runner.Join(TimeSpan.FromSeconds(20)), Is.True, "the open went on after its wait for a carrier and waited for a writer");
            Assert.That(failure, Is.Null);
            Assert.That(raised, how == "timeout" ? Is.InstanceOf<GreenTimeoutException>() : Is.InstanceOf<GreenletExit>());
            Assert.That(endedWhileTaken, Is.True, "the wait for a carrier ended only when the carriers came back");
            Assert.That(opened, Is.False);
            int writer = OpenNative(fifo, 0x801 /* O_WRONLY | O_NONBLOCK */);
            if (writer >= 0) CloseNative(writer);
            Assert.That(writer, Is.LessThan(0), "no read end is open (ENXIO)");
        }
        finally
        {
            carriersBack.Set();
            ReleaseStuckFifoOpens(fifo, runner);
            File.Delete(fifo);
        }
    }

    /// <summary>While a greenlet's FIFO open waits 500 ms for the other end (a thread), the hub goes on: a ticker's longest
    /// gap stays far below the wait (it was the whole wait). Both directions: a reader waits for a writer, a writer for a
    /// reader.</summary>
    [TestCase(FileAccess.Read)]
    [TestCase(FileAccess.Write)]
    public void AFifoOpenThatWaitsForTheOtherEndLetsTheHubRun(FileAccess access)
    {
        string fifo = path + ".fifo";
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        int peerRead = -1;
        var peer = new Thread(() =>
        {
            Thread.Sleep(500);
            using var other = new FileStream(fifo, FileMode.Open, access == FileAccess.Read ? FileAccess.Write : FileAccess.Read);
            if (access == FileAccess.Read) other.Write([1, 2, 3]);
            else peerRead = other.Read(new byte[10]);
        });
        try
        {
            bool done = false;
            TimeSpan longestGap = TimeSpan.Zero;
            var ticker = Green.Spawn(() =>
            {
                var last = Stopwatch.StartNew();
                while (!done)
                {
                    Green.Sleep(TimeSpan.FromMilliseconds(5));
                    if (last.Elapsed > longestGap) longestGap = last.Elapsed;
                    last.Restart();
                }
            });
            var opener = Green.Spawn(() =>
            {
                Green.Sleep(TimeSpan.FromMilliseconds(20)); // the ticker is running
                peer.Start();
                using var stream = new FileStream(fifo, FileMode.Open, access);
                if (access == FileAccess.Read) Assert.That(stream.Read(new byte[10]), Is.EqualTo(3));
                else stream.Write([1, 2, 3]);
                done = true;
            });
            Green.JoinAll([opener, ticker], raiseError: true);
            peer.Join();
            if (access == FileAccess.Write) Assert.That(peerRead, Is.EqualTo(3));
            Assert.That(longestGap, Is.LessThan(TimeSpan.FromMilliseconds(200)), "the open held the hub while it waited for the other end");
        }
        finally
        {
            if (peer.ThreadState != System.Threading.ThreadState.Unstarted) peer.Join();
            File.Delete(fifo);
        }
    }

    /// <summary>At the carrier cap with no parked greenlet to stand in, a truncation or a delete of a large file that finds
    /// a kill already pending waited for a carrier, shielded, until one came back (here 2 s, when the carriers' released
    /// calls end; for good if they never do). It is no cancellation point (a scratch file's delete in a <c>finally</c>
    /// must happen), so it now runs at once, inline, while every carrier is still taken, and the kill is raised at the
    /// greenlet's next blocking point.</summary>
    [TestCase("delete")]
    [TestCase("create")]
    public void ATruncationOrDeleteWithAKillPendingAtTheCarrierCapRunsAtOnce(string operation)
    {
        string big = path + ".big";
        using (var fs = new FileStream(big, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
            fs.Write(new byte[4 << 20]); // blocks written: a truncation or delete of it runs released
        using var carriersBack = new ManualResetEventSlim();
        bool doneWhileTaken = false, changed = false;
        Exception? raised = null, failure = null;
        var runner = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxCarriers = 2, MaxBlockingTime = null });
                void TakeACarrier() => Green.RunBlocking(() => carriersBack.Wait(TimeSpan.FromSeconds(20)));
                // The changer keeps one carrier, a greenlet the other in a released call, and the main greenlet's released
                // call (whose thread counts against no cap) leaves no parked greenlet to stand in; a spawned greenlet could
                // not start at the cap, so the changer is there first. Its kill lands in a shielded sleep: pending.
                bool go = false;
                var changer = Green.Spawn(() =>
                {
                    try
                    {
                        using (Green.Shield())
                            while (!go) Green.Sleep(5);
                        if (operation == "delete") File.Delete(big);
                        else File.OpenHandle(big, FileMode.Create, FileAccess.Write).Dispose();
                        changed = true;
                        doneWhileTaken = !carriersBack.IsSet;
                        Green.Sleep(1);
                    }
                    catch (Exception e)
                    {
                        raised = e;
                        throw;
                    }
                }, "changer");
                var taker = Green.Spawn(TakeACarrier);
                Green.Sleep(100);
                changer.Kill(block: false);
                go = true;
                var giver = Task.Run(() =>
                {
                    Thread.Sleep(2000);
                    carriersBack.Set();
                });
                TakeACarrier();
                Green.JoinAll([changer, taker]);
                Green.Wait(giver);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        try
        {
            runner.Start();
            Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
            Assert.That(failure, Is.Null);
            Assert.That(changed, Is.True, "the pending kill was raised by the truncation or delete");
            Assert.That(raised, Is.InstanceOf<GreenletExit>(), "the kill was raised at the next blocking point");
            Assert.That(doneWhileTaken, Is.True, "the call waited for a carrier with the kill pending");
            if (operation == "delete") Assert.That(File.Exists(big), Is.False);
            else Assert.That(new FileInfo(big).Length, Is.Zero);
        }
        finally
        {
            carriersBack.Set();
            runner.Join(TimeSpan.FromSeconds(10));
            File.Delete(big);
        }
    }

    /// <summary><c>File.Delete</c> of a large file and a truncating open of one (<c>FileMode.Create</c>,
    /// <c>FileMode.Truncate</c>) free its blocks and cached pages inside the call (40–100 ms for 64–256 MiB on ext4): they
    /// held the hub meanwhile, and now run with the baton released. Counted, not timed: the observer's turns while the call
    /// is in progress are zero when it holds the hub. Blocks written, not a sparse or preallocated file: those free next to
    /// nothing.</summary>
    [TestCase("delete")]
    [TestCase("create")]
    [TestCase("truncate")]
    public void DeletingOrTruncatingALargeFileLetsTheHubRun(string operation)
    {
        string big = path + ".big";
        var chunk = new byte[1 << 20];
        new Random(7).NextBytes(chunk);
        try
        {
            bool inCall = false, done = false;
            int turnsDuringCalls = 0;
            var observer = Green.Spawn(() =>
            {
                while (!done)
                {
                    if (inCall) turnsDuringCalls++;
                    Green.Sleep(TimeSpan.FromMilliseconds(1));
                }
            });
            var worker = Green.Spawn(() =>
            {
                for (int i = 0; i < 5 && turnsDuringCalls == 0; i++)
                {
                    using (var fs = new FileStream(big, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
                    {
                        for (int m = 0; m < 64; m++) fs.Write(chunk);
                    }
                    inCall = true;
                    switch (operation)
                    {
                        case "delete":
                            File.Delete(big);
                            break;
                        case "create":
                            File.OpenHandle(big, FileMode.Create, FileAccess.Write).Dispose();
                            break;
                        default:
                            new FileStream(big, FileMode.Truncate).Dispose();
                            break;
                    }
                    inCall = false;
                    Assert.That(File.Exists(big), Is.EqualTo(operation != "delete"));
                    if (operation != "delete") Assert.That(new FileInfo(big).Length, Is.Zero);
                }
                done = true;
            });
            Green.JoinAll([worker, observer], raiseError: true);
            Assert.That(turnsDuringCalls, Is.GreaterThan(0), $"{operation} of a 64 MiB file held the hub");
        }
        finally
        {
            File.Delete(big);
        }
    }

    /// <summary>Opens and deletes on a greenlet, released or inline, end exactly as on a thread: the same handles (length,
    /// type), the same exceptions with the same messages.</summary>
    [Test]
    public void OpensAndDeletesOnAGreenletEndAsOnAThread()
    {
        string dir = path + ".dir", fifo = path + ".fifo", big = path + ".big", link = path + ".link";
        Directory.CreateDirectory(dir);
        Assert.That(MkFifo(fifo, 0x180 /* 0600 */), Is.Zero);
        File.CreateSymbolicLink(link, fifo);
        var cases = new (string Name, Func<string> Call)[]
        {
            ("open a missing file", () => Describe(File.OpenHandle(path + ".missing"))),
            ("open in a missing directory", () => Describe(File.OpenHandle(Path.Combine(path + ".nodir", "x")))),
            ("open a directory to read", () => Describe(File.OpenHandle(dir))),
            ("create over a directory", () => Describe(File.OpenHandle(dir, FileMode.Create, FileAccess.Write))),
            ("truncate a missing file", () => Describe(File.OpenHandle(path + ".missing", FileMode.Truncate, FileAccess.Write))),
            ("create a new file over an existing one", () => Describe(File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write))),
            ("read a small file", () => File.ReadAllBytes(path).Length.ToString()),
            ("truncate a large file", () => Describe(File.OpenHandle(big, FileMode.Truncate, FileAccess.Write))),
            ("create over a large file", () => Describe(File.OpenHandle(big, FileMode.Create, FileAccess.ReadWrite))),
            ("truncate a large file another handle locks", () =>
            {
                using var held = new FileStream(big, FileMode.Open, FileAccess.Read, FileShare.None);
                return Describe(File.OpenHandle(big, FileMode.Truncate, FileAccess.Write));
            }),
            ("truncate a FIFO read-write", () => Describe(File.OpenHandle(fifo, FileMode.Truncate, FileAccess.ReadWrite))),
            ("open a FIFO read-write through a symlink", () => Describe(File.OpenHandle(link, FileMode.Open, FileAccess.ReadWrite))),
            ("delete a large file", () => { File.Delete(big); return File.Exists(big).ToString(); }),
            ("delete a missing file", () => { File.Delete(path + ".missing"); return "ok"; }),
            ("delete a directory", () => { File.Delete(dir); return "ok"; }),
            ("delete in a missing directory", () => { File.Delete(Path.Combine(path + ".nodir", "x")); return "ok"; }),
            ("delete a symlink to a FIFO", () => { new FileInfo(link).Delete(); return File.Exists(link) + " " + File.Exists(fifo); }),
        };
        try
        {
            foreach (var (name, call) in cases)
            {
                string onThread = "", onGreenlet = "";
                WriteLargeFile(big);
                var thread = new Thread(() => onThread = Outcome(call));
                thread.Start();
                thread.Join();
                WriteLargeFile(big);
                if (!File.Exists(link)) File.CreateSymbolicLink(link, fifo);
                Green.Spawn(() => onGreenlet = Outcome(call)).Join();
                if (!File.Exists(link)) File.CreateSymbolicLink(link, fifo);
                Assert.That(onGreenlet, Is.EqualTo(onThread), name);
            }
        }
        finally
        {
            Directory.Delete(dir);
            File.Delete(fifo);
            File.Delete(big);
            File.Delete(link);
        }

        static string Outcome(Func<string> call)
        {
            try
            {
                return call();
            }
            catch (Exception e)
            {
                return $"{e.GetType().Name}: {e.Message}";
            }
        }

        static string Describe(SafeFileHandle handle)
        {
            using (handle)
                return $"seekable {Lseek(handle, 0, 1 /* SEEK_CUR */) >= 0}, length {(Lseek(handle, 0, 1) >= 0 ? RandomAccess.GetLength(handle) : -1)}";
        }

        static void WriteLargeFile(string file)
        {
            using var fs = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            fs.Write(new byte[4 << 20]);
        }
    }

    /// <summary>Opens and closes both ends of <paramref name="fifo"/> without waiting, again and again, so that greenlets
    /// stuck in their opens of it (the old deadlock) go on and their thread ends.</summary>
    private static void ReleaseStuckFifoOpens(string fifo, Thread stuck)
    {
        for (int i = 0; i < 50 && stuck.IsAlive; i++)
        {
            int reader = OpenNative(fifo, 0x800 /* O_RDONLY | O_NONBLOCK */);
            int writer = OpenNative(fifo, 0x801 /* O_WRONLY | O_NONBLOCK */);
            if (writer >= 0) CloseNative(writer);
            if (reader >= 0) CloseNative(reader);
            stuck.Join(TimeSpan.FromMilliseconds(100));
        }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "open", StringMarshalling = System.Runtime.InteropServices.StringMarshalling.Utf8)]
    private static partial int OpenNative(string path, int flags);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "close")]
    private static partial int CloseNative(int fd);
}
