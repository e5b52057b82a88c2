using System.Diagnostics;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary><see cref="Process.WaitForExit()"/> and its overloads, <see cref="Process.Start()"/>, and
/// <see cref="Environment.Exit"/>.</summary>
internal sealed class ProcessesPatchSet : PatchSet
{
    private static readonly Type C = typeof(CooperativeProcess);

    public static readonly ProcessesPatchSet Instance = new(); // after the fields its constructor uses

    public override string Name => "Processes";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(typeof(Process), "WaitForExit", [typeof(int)], C, "WaitForExit", CooperativeProcess.WaitInt),
        Point(typeof(Process), "WaitForExit", [], C, "WaitForExit", CooperativeProcess.WaitNone),
        Point(typeof(Process), "WaitForExit", [typeof(TimeSpan)], C, "WaitForExit", CooperativeProcess.WaitTimeSpan),
        Point(typeof(Process), "Start", [], C, "Start", CooperativeProcess.StartSlot),
        Point(typeof(Environment), "Exit", [typeof(int)], C, "Exit", CooperativeProcess.ExitSlot),
    ];
}
