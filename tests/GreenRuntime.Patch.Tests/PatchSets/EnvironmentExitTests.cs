using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary><c>Environment.Exit</c> on a greenlet, in a child process (tests/ConsoleProbe), since it ends the process.</summary>
public class EnvironmentExitTests
{
    [Test]
    public void ProcessExitHandlersOfAnExitCalledOnAGreenletSeeTheOtherGreenletsRun()
    {
        // Graceful shutdown: the handler sets a flag and waits for a worker greenlet to notice it and stop, as a thread's
        // handler waits for a worker thread (about one poll of the worker, 10 ms).
        using Process probe = ConsoleProbeProcess.Start("exit-graceful");
        try
        {
            Task<string> stdout = probe.StandardOutput.ReadToEndAsync();
            Task<string> stderr = probe.StandardError.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(60)), Is.True, "the probe exited");
            probe.WaitForExit();
            Assert.That(probe.ExitCode, Is.EqualTo(3), $"{stdout.Result} {stderr.Result}");
            Assert.That(stdout.Result.Trim(), Does.StartWith("stopped=True|"), stderr.Result);
        }
        finally
        {
            if (!probe.HasExited) probe.Kill();
        }
    }
}
