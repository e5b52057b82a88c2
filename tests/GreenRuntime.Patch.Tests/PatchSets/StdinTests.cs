using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Console.ReadLine on a greenlet, on a real stdin: a child process (tests/ConsoleProbe) patches everything and
/// reads a line on one greenlet while another ticks; this test writes the line after a pause.
/// </summary>
[TestFixture]
public partial class StdinTests
{
    /// <summary>Waits for the probe's "ready" line; returns its standard error, read to the end in the background.</summary>
    private static Task<string> WaitUntilReady(Process probe)
    {
        Task<string> stderr = probe.StandardError.ReadToEndAsync();
        Task<string?> ready = probe.StandardOutput.ReadLineAsync();
        Assert.That(ready.Wait(TimeSpan.FromSeconds(30)), Is.True, "the probe started");
        Assert.That(ready.Result, Is.EqualTo("ready"), $"probe said: {ready.Result} {(probe.HasExited ? stderr.Result : "")}");
        return stderr;
    }

    /// <summary>Legacy code often holds every thread-pool thread; a read sent to the pool did not even start until the
    /// pool grew, so a line typed at once reached the greenlet seconds later.</summary>
    [Test]
    public void ReadLineOnAGreenletNeedsNoThreadPoolThread()
    {
        using Process probe = ConsoleProbeProcess.Start("held-pool");
        try
        {
            Task<string> stderr = WaitUntilReady(probe);
            var watch = Stopwatch.StartNew();
            probe.StandardInput.WriteLine("typed at once");
            probe.StandardInput.Flush();
            Task<string?> answer = probe.StandardOutput.ReadLineAsync();
            Assert.That(answer.Wait(TimeSpan.FromSeconds(30)), Is.True, "the probe answered");
            var latency = watch.Elapsed;
            Assert.That(answer.Result, Does.StartWith("line=typed at once|"));
            // Generous: milliseconds when a thread of its own reads; seconds when the read waits for the pool to grow.
            Assert.That(latency, Is.LessThan(TimeSpan.FromMilliseconds(500)), "the line reached the greenlet at once");
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(30)), Is.True);
            Assert.That(probe.ExitCode, Is.EqualTo(0), stderr.Result);
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    [Test]
    public void ReadLineOnAGreenletLetsOthersRunAndReturnsTheLineIntact()
    {
        using Process probe = ConsoleProbeProcess.Start();
        try
        {
            // "ready": the ticker ticked once, so the reader greenlet is inside Console.ReadLine.
            Task<string> stderr = WaitUntilReady(probe);
            Thread.Sleep(300);
            const string line = "a line for the greenlet: ünïcødé, tabs\tand  spaces";
            probe.StandardInput.WriteLine(line);
            probe.StandardInput.Flush();
            Task<string> rest = probe.StandardOutput.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(30)), Is.True, "the probe finished after its line");
            TestContext.Out.WriteLine(rest.Result);
            TestContext.Out.WriteLine(stderr.Result);
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe output: {rest.Result} {stderr.Result}");
            var fields = rest.Result.Trim().Split('|');
            Assert.That(fields[0], Is.EqualTo("line=" + line), "the line arrived intact");
            Assert.That(fields[2], Is.EqualTo("readerFirst=True"), "the reader was waiting before the ticker ticked");
            int ticks = int.Parse(fields[1]["ticksWhileWaiting=".Length..]);
            // 300 ms at one tick per 10 ms: about 30; a blocked hub would give 0 or 1.
            Assert.That(ticks, Is.GreaterThanOrEqualTo(5), "the ticker kept ticking while Console.ReadLine waited");
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    [Test]
    public void ReadsAbandonedByTimeoutsAreKeptForTheNextReaderOldestFirst()
    {
        using Process probe = ConsoleProbeProcess.Start("abandoned-reads");
        try
        {
            Task<string> stderr = WaitUntilReady(probe);
            foreach (var line in new[] { "1", "2", "3", "4" })
            {
                probe.StandardInput.WriteLine(line);
                probe.StandardInput.Flush();
                Thread.Sleep(100); // one line at a time: each reaches whichever read is waiting then
            }
            Task<string> rest = probe.StandardOutput.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(30)), Is.True, "the probe finished after its lines");
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe output: {rest.Result} {stderr.Result}");
            Assert.That(rest.Result.Trim(), Is.EqualTo("lines=1,2,3,4"), "no line lost, none out of order");
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    /// <summary>Piped input arrives in 4 KiB chunks: what Console.In already holds is read on the greenlet, and only a read
    /// that needs more input goes to the stdin thread (each line went there, two thread hand-offs per line).</summary>
    [Test]
    public void PipedLinesAlreadyBufferedAreReadOnTheGreenletInOrder()
    {
        const int count = 20_000;
        using Process probe = ConsoleProbeProcess.Start("piped-lines");
        try
        {
            Task<string> stderr = probe.StandardError.ReadToEndAsync();
            Task<string> output = probe.StandardOutput.ReadToEndAsync();
            for (int i = 0; i < count; i++) probe.StandardInput.WriteLine(i);
            probe.StandardInput.Close();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(60)), Is.True, "the probe read its input to the end");
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe output: {output.Result} {stderr.Result}");
            var fields = output.Result.Trim().Split('|').Select(f => f.Split('=')).ToDictionary(f => f[0], f => f[1]);
            TestContext.Out.WriteLine(output.Result);
            Assert.That(fields["lines"], Is.EqualTo(count.ToString()), "every line arrived");
            Assert.That(fields["ordered"], Is.EqualTo("True"), "in order, intact, the first character read apart included");
            // About 120 KB of input in 4 KiB reads: some tens of reads need the stdin thread (a few thread switches each),
            // not every line (at least two switches per line).
            Assert.That(long.Parse(fields["switches"]), Is.LessThan(count / 4), "voluntary context switches while reading");
            Assert.That(int.Parse(fields["ticks"]), Is.GreaterThan(0), "the other greenlet ran while the reader waited for input");
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    /// <summary>Console.ReadKey reads the terminal: the probe's stdin is the slave side of a pseudo-terminal whose master
    /// this test holds. The read used to run on the greenlet itself and stop the hub until a key came.</summary>
    [Test]
    public void ReadKeyOnAGreenletLetsOthersRunAndKeepsAKeyItsTimeoutAbandoned()
    {
        using var terminal = PseudoTerminal.Open();
        string dotnet = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var start = new ProcessStartInfo("/bin/sh", ["-c", "exec \"$0\" \"$1\" readkey < \"$2\"", dotnet, Path.Combine(AppContext.BaseDirectory, "ConsoleProbe.dll"), terminal.SlavePath])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        using Process probe = Process.Start(start)!;
        try
        {
            Task<string> stderr = WaitUntilReady(probe);
            Thread.Sleep(300);
            terminal.Write("ab");
            Task<string> rest = probe.StandardOutput.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(30)), Is.True, "the probe finished after its keys");
            TestContext.Out.WriteLine(rest.Result);
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe output: {rest.Result} {stderr.Result}");
            var fields = rest.Result.Trim().Split('|').Select(f => f.Split('=')).ToDictionary(f => f[0], f => f[1]);
            Assert.That(fields["timedOut"], Is.EqualTo("True"), "the first ReadKey gave up after 100 ms");
            Assert.That(fields["keys"], Is.EqualTo("ab"), "the key of the abandoned read went to the next ReadKey, then the next key");
            // 300 ms at one tick per 10 ms: about 30; a blocked hub gives 0 or 1.
            Assert.That(int.Parse(fields["ticksWhileWaiting"]), Is.GreaterThanOrEqualTo(5), "the ticker kept ticking while ReadKey waited");
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    /// <summary>A pseudo-terminal pair: the test writes the "typed" keys to the master; the child reads the slave.</summary>
    private sealed partial class PseudoTerminal : IDisposable
    {
        private readonly SafeFileHandle _master;

        private PseudoTerminal(SafeFileHandle master, string slavePath)
        {
            _master = master;
            SlavePath = slavePath;
        }

        public string SlavePath { get; }

        public static PseudoTerminal Open()
        {
            const int ReadWrite = 2, NoControllingTerminal = 0x100;
            int fd = PosixOpenPt(ReadWrite | NoControllingTerminal);
            Assert.That(fd, Is.GreaterThanOrEqualTo(0), $"posix_openpt: errno {Marshal.GetLastPInvokeError()}");
            var master = new SafeFileHandle(fd, ownsHandle: true);
            Assert.That(GrantPt(fd) == 0 && UnlockPt(fd) == 0, Is.True, $"grantpt/unlockpt: errno {Marshal.GetLastPInvokeError()}");
            string? slave = Marshal.PtrToStringUTF8(PtsName(fd));
            Assert.That(slave, Is.Not.Null, "ptsname");
            return new PseudoTerminal(master, slave!);
        }

        public void Write(string keys)
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(keys);
            Assert.That((int)WriteFd(_master, bytes, bytes.Length), Is.EqualTo(bytes.Length), $"write: errno {Marshal.GetLastPInvokeError()}");
        }

        public void Dispose() => _master.Dispose();

        [LibraryImport("libc", EntryPoint = "posix_openpt", SetLastError = true)]
        private static partial int PosixOpenPt(int flags);

        [LibraryImport("libc", EntryPoint = "grantpt", SetLastError = true)]
        private static partial int GrantPt(int fd);

        [LibraryImport("libc", EntryPoint = "unlockpt", SetLastError = true)]
        private static partial int UnlockPt(int fd);

        [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
        private static partial nint WriteFd(SafeFileHandle fd, byte[] buffer, nint count);

        [LibraryImport("libc", EntryPoint = "ptsname")]
        private static partial nint PtsName(int fd);
    }
}
