using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary><c>Console.ReadLine</c> and <c>Console.Read</c> (both [NoInlining]).</summary>
internal sealed class StdinPatchSet : PatchSet
{
    public static readonly StdinPatchSet Instance = new();

    public override string Name => "Stdin";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(typeof(Console), "ReadLine", [], typeof(CooperativeConsole), "ReadLine", CooperativeConsole.ReadLineSlot),
        Point(typeof(Console), "Read", [], typeof(CooperativeConsole), "Read", CooperativeConsole.ReadSlot),
    ];

    public override IReadOnlyList<(string Method, string Reason)> KnownRefusals { get; } =
    [
        ("System.Console.In.Read*/ReadLine, Console.OpenStandardInput().Read",
            "Not cooperative: only the static Console.ReadLine and Console.Read are patched; reading Console.In or the stdin stream directly blocks the hub."),
    ];
}
