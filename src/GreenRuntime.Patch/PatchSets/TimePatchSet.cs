using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Thread.Sleep and Thread.Yield. <c>Sleep(int)</c> is [NoInlining] and <c>Sleep(TimeSpan)</c> calls it; both are
/// patched. <c>Thread.Yield</c> is a small method: calls inlined before patching keep the OS yield.
/// </summary>
internal sealed class TimePatchSet : PatchSet
{
    public static readonly TimePatchSet Instance = new();

    public override string Name => "Time";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(typeof(Thread), nameof(Thread.Sleep), [typeof(int)], typeof(CooperativeTime), nameof(CooperativeTime.Sleep), CooperativeTime.SleepInt),
        Point(typeof(Thread), nameof(Thread.Sleep), [typeof(TimeSpan)], typeof(CooperativeTime), nameof(CooperativeTime.Sleep), CooperativeTime.SleepTimeSpan) with { CoveredBy = "System.Threading.Thread.Sleep(Int32)" },
        Point(typeof(Thread), nameof(Thread.Yield), [], typeof(CooperativeTime), nameof(CooperativeTime.Yield), CooperativeTime.YieldSlot),
    ];

    public override IReadOnlyList<(string Method, string Reason, bool Blocks)> KnownRefusals { get; } =
    [
        ("System.Threading.Thread.SpinWait(Int32)", "Busy-waiting is CPU work, not a wait; it is left as is (it holds the hub for its duration).", Blocks: false),
    ];
}
