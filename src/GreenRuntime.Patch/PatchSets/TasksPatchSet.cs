using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>Synchronous waits for tasks, at <c>Task.InternalWait</c> and <c>Task.WaitAllCore</c>.</summary>
internal sealed class TasksPatchSet : PatchSet
{
    public static readonly TasksPatchSet Instance = new();

    public override string Name => "Tasks";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        new("System.Threading.Tasks.Task.InternalWait(Int32, CancellationToken)", CooperativeTask.InternalWaitMethod, typeof(CooperativeTask).GetMethod(nameof(CooperativeTask.InternalWait))!, CooperativeTask.Wait),
        new("System.Threading.Tasks.Task.WaitAllCore(ReadOnlySpan`1, Int32, CancellationToken)", CooperativeTask.WaitAllCoreMethod, typeof(CooperativeTask).GetMethod(nameof(CooperativeTask.WaitAllCore))!, CooperativeTask.WaitAll),
    ];

    public override IReadOnlyList<(string Method, string Reason, bool Blocks)> KnownRefusals { get; } =
    [
        ("System.Threading.Tasks.ValueTask`1.Result / ValueTaskAwaiter`1.GetResult() on an IValueTaskSource",
            "Not cooperative: a ValueTask backed by an IValueTaskSource must not be waited on synchronously at all (its behaviour is undefined); ValueTasks backed by a Task go through Task.InternalWait and are cooperative.", Blocks: true),
    ];
}
