using System.Diagnostics;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>The JIT guard leaves JIT failures of unrelated methods catchable.</summary>
[TestFixture]
public class JitGuardTests
{
    private static readonly string[] ProbeFiles =
    [
        "DetourJitProbe.dll", "DetourJitProbe.runtimeconfig.json", "GreenRuntime.Patch.dll", "GreenRuntime.dll", "Iced.dll",
    ];

    [Test]
    public void GuardIsInstalledOnceSupported()
    {
        Detour.EnsureSupported();
        Assert.That(JitGuard.IsInstalled, Is.True);
    }

    [Test]
    public void MissingAssemblyDuringJitIsACatchableExceptionInAChildProcess()
    {
        // The probe runs from a copy of its output without DetourJitProbe.Missing.dll (and without its
        // deps.json, which would name it), so compiling Probe.UsesMissingA/B fails inside the JIT.
        string source = AppContext.BaseDirectory;
        string dir = Directory.CreateTempSubdirectory("detour-jit-probe-").FullName;
        try
        {
            foreach (string file in ProbeFiles)
            {
                File.Copy(Path.Combine(source, file), Path.Combine(dir, file));
            }

            string dotnet = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
            var start = new ProcessStartInfo(dotnet, [Path.Combine(dir, "DetourJitProbe.dll")])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = dir,
            };
            using Process probe = Process.Start(start)!;
            Task<string> stdout = probe.StandardOutput.ReadToEndAsync();
            Task<string> stderr = probe.StandardError.ReadToEndAsync();
            Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(60)), Is.True, "The probe must finish.");
            TestContext.Out.WriteLine(stdout.Result);
            TestContext.Out.WriteLine(stderr.Result);
            Assert.That(probe.ExitCode, Is.EqualTo(0), $"probe output: {stdout.Result} {stderr.Result}");
            Assert.That(stdout.Result, Does.Contain("caught 100 FileNotFoundException"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
