namespace GreenRuntime;

/// <summary>Settings of a <see cref="HubGroup"/>. Every property has a documented default and range.</summary>
public sealed class HubGroupOptions
{
    /// <summary>How many hubs (each on a thread of its own). Default 0: <see cref="Environment.ProcessorCount"/>. Range 0–1024.</summary>
    public int HubCount { get; init; }

    /// <summary>The options every hub of the group is created with. Default: <see cref="HubOptions"/>' defaults.</summary>
    public HubOptions? Hub { get; init; }

    /// <summary>
    /// Pin hub <c>i</c>'s thread and its carriers to one CPU of the process's CPU set (the <c>i</c>-th, round robin),
    /// as <see cref="HubOptions.PinCarriersToOneCpu"/> does for one hub. Default false. Linux only (elsewhere ignored).
    /// </summary>
    /// <remarks>Each hub's wakes stay on its own CPU. Worth it when the process has the CPUs to itself; on a machine
    /// shared with other busy processes a pinned hub cannot move away from a CPU they load.</remarks>
    public bool PinHubsToCpus { get; init; }

    /// <summary>How long <see cref="HubGroup.Dispose"/> waits for each hub's remaining greenlets to unwind after killing
    /// them. Default 5 s; must be positive.</summary>
    public TimeSpan DisposeTimeout { get; init; } = TimeSpan.FromSeconds(5);

    internal void Validate()
    {
        if (HubCount is < 0 or > 1024)
            throw new ArgumentOutOfRangeException(nameof(HubCount), HubCount, "HubCount must be between 0 (one hub per CPU) and 1024.");
        if (DisposeTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(DisposeTimeout), DisposeTimeout, "DisposeTimeout must be positive.");
        Hub?.Validate();
    }
}
