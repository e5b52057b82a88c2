using System.Net;

namespace GreenRuntime.Soak;

/// <summary>Pause/stop state shared by the soak and the workload drivers. Hub-only.</summary>
internal sealed class SoakControl
{
    /// <summary>Set while the drivers may run rounds; cleared to pause them at their gate.</summary>
    public Event Resume { get; } = new();
    public bool Paused { get; set; }
    public bool Stopping { get; set; }
    public int ParkedDrivers { get; set; }
}

/// <summary>What every workload shares: the seed, the ledger, the gate, the scratch folder and the echo server.</summary>
internal sealed class SoakContext(int seed, string scratch)
{
    public int Seed { get; } = seed;
    public Ledger Ledger { get; } = new();
    public SoakControl Control { get; } = new();
    /// <summary>A private folder for the file workloads, deleted at the end.</summary>
    public string Scratch { get; } = scratch;
    /// <summary>Where the echo server listens (set when it starts).</summary>
    public IPEndPoint EchoEndPoint { get; set; } = new(IPAddress.Loopback, 0);
    /// <summary>A 4 MiB file of known content that greenlets read while being killed.</summary>
    public string BigFile { get; set; } = "";
}
