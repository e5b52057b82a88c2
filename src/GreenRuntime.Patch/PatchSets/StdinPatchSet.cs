using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Reads of <see cref="Console.In"/> and of the terminal's keys, at the internal <c>System.IO.SyncTextReader</c> that
/// <c>Console.In</c> is, which <c>Console.ReadLine</c>/<c>Console.Read</c>/<c>Console.ReadKey</c> call (they themselves
/// have a call in their first bytes, which the detour engine refuses to relocate, or may be inlined).
/// </summary>
internal sealed class StdinPatchSet : PatchSet
{
    private static readonly Type? SyncTextReader = typeof(Console).Assembly.GetType("System.IO.SyncTextReader");

    public static readonly StdinPatchSet Instance = new(); // after the field its constructor uses

    public override string Name => "Stdin";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        new("System.IO.SyncTextReader.ReadLine() (Console.In, Console.ReadLine)", SyncTextReader?.GetMethod("ReadLine", Type.EmptyTypes), typeof(CooperativeConsole).GetMethod(nameof(CooperativeConsole.ReadLine))!, CooperativeConsole.ReadLineSlot, WarmUpConsoleIn),
        new("System.IO.SyncTextReader.Read() (Console.In, Console.Read)", SyncTextReader?.GetMethod("Read", Type.EmptyTypes), typeof(CooperativeConsole).GetMethod(nameof(CooperativeConsole.Read))!, CooperativeConsole.ReadSlot, WarmUpConsoleIn),
        new("System.IO.SyncTextReader.ReadKey(Boolean) (Console.ReadKey)", SyncTextReader?.GetMethod("ReadKey", [typeof(bool)]), typeof(CooperativeConsole).GetMethod(nameof(CooperativeConsole.ReadKey))!, CooperativeConsole.ReadKeySlot, WarmUpConsoleIn),
    ];

    public override IReadOnlyList<(string Method, string Reason, bool Blocks)> KnownRefusals { get; } =
    [
        ("System.Console.In.Read(char[], int, int)/ReadToEnd/ReadBlock, Console.OpenStandardInput().Read",
            "Not cooperative: only line and character reads of Console.In are patched; block reads and the raw stdin stream block the hub.", Blocks: true),
    ];

    // Console.In is created lazily; creating it makes sure the SyncTextReader type and its methods are loaded.
    private static void WarmUpConsoleIn() => _ = Console.In;
}
