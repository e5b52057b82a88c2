using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Starts tests/ConsoleProbe (built next to the tests) with its stdin, stdout and stderr as pipes the test holds.</summary>
internal static class ConsoleProbeProcess
{
    public static Process Start(params string[] arguments)
    {
        string dotnet = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var start = new ProcessStartInfo(dotnet, [Path.Combine(AppContext.BaseDirectory, "ConsoleProbe.dll"), .. arguments])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        return Process.Start(start)!;
    }
}
