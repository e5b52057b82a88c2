using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Console output on greenlets to a pipe whose reader is not reading: a child process (tests/ConsoleProbe) patches
/// everything, and two greenlets write far more lines than a pipe holds while a third sleeps 5 ms at a time; this
/// test reads the child's stdout only after a second.
/// </summary>
[TestFixture]
public class ConsoleOutputTests
{
    private const int LinesPerWriter = 5_000; // 2 x 500 KB: the 64 KB pipe fills within the first milliseconds
    private const int ReaderPauseMs = 1_000;

    [Test]
    public void WritesToAFullPipeLetTheOtherGreenletsRunAndLoseNothing()
    {
        var (written, maxGap, stdout) = RunProbe(filesOnly: false);
        Assert.That(written, Is.EqualTo(2 * LinesPerWriter));
        // Blocked writes holding the hub would stop the ticker for about the reader's whole pause.
        Assert.That(maxGap, Is.LessThan(ReaderPauseMs / 2), "the ticker kept running while the writers waited for the reader");
        AssertEveryLineOnceInOrder(stdout);
    }

    /// <summary>Without the Locks set a greenlet waiting for Console.Out's monitor would hold the hub while the writer
    /// that owns it needs the hub to return: the writes then wait with the hub held, as unpatched, and finish.</summary>
    [Test]
    public void WithoutTheLocksSetWritesToAFullPipeStillFinish()
    {
        var (written, _, stdout) = RunProbe(filesOnly: true);
        Assert.That(written, Is.EqualTo(2 * LinesPerWriter));
        AssertEveryLineOnceInOrder(stdout);
    }

    private static (int Written, double MaxGapMs, string Stdout) RunProbe(bool filesOnly)
    {
        string lines = LinesPerWriter.ToString();
        using Process probe = ConsoleProbeProcess.Start(filesOnly ? ["stdout", lines, "files-only"] : ["stdout", lines]);
        try
        {
            Task<string> stderr = probe.StandardError.ReadToEndAsync();
            Thread.Sleep(ReaderPauseMs); // the writers fill the pipe and wait for this reader
            Task<string> stdout = probe.StandardOutput.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(60)) && stdout.Wait(TimeSpan.FromSeconds(10)), Is.True, "the probe finished");
            TestContext.Out.WriteLine(stderr.Result);
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe said: {stderr.Result}");

            var fields = stderr.Result.Trim().Split('|');
            Assert.That(fields[2], Is.EqualTo("patched=True"), "the probe's Patch call redirected console output");
            return (int.Parse(fields[0]["written=".Length..]), double.Parse(fields[1]["maxTickerGapMs=".Length..]), stdout.Result);
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }

    private static void AssertEveryLineOnceInOrder(string stdout)
    {
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(2 * LinesPerWriter), "every line arrived once");
        foreach (char tag in "ab")
        {
            var mine = lines.Where(l => l[0] == tag).ToList();
            Assert.That(mine, Has.Count.EqualTo(LinesPerWriter), $"writer {tag}'s lines");
            for (int i = 0; i < mine.Count; i++)
                Assert.That(mine[i], Is.EqualTo($"{tag}{i:D8}{new string('.', 90)}"), $"writer {tag}'s line {i}: whole, and in order");
        }
    }
}
