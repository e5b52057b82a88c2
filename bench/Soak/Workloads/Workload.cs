namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// One kind of load. A driver greenlet runs rounds (spawn a seeded random batch of greenlets through the
/// <see cref="Ledger"/>, wait for all of them) until the soak pauses or stops it. Between rounds it parks at the
/// soak's gate, so that the soak can check the invariants that only hold when nothing is in flight.
/// </summary>
internal abstract class Workload
{
    /// <summary>How long a round may take before its unfinished greenlets count as lost.</summary>
    private static readonly TimeSpan RoundLimit = TimeSpan.FromSeconds(90);

    protected Workload(SoakContext context, string name)
    {
        Context = context;
        Name = name;
        Random = new Random(unchecked(context.Seed * 31 + StableHash(name)));
    }

    public string Name { get; }
    protected SoakContext Context { get; }
    protected Ledger Ledger => Context.Ledger;
    /// <summary>This workload's own seeded generator: used only on the hub, so never raced.</summary>
    protected Random Random { get; }
    public long Rounds { get; private set; }

    /// <summary>Starts long-lived services (servers) before the first round.</summary>
    public virtual void Start() { }

    /// <summary>Spawns one batch of greenlets and returns them; the driver waits for all of them.</summary>
    protected abstract IReadOnlyList<Greenlet> Round();

    /// <summary>Checks the invariants that hold when no greenlet of this workload is in flight, and resets
    /// per-phase bookkeeping.</summary>
    public virtual void CheckQuiet() { }

    /// <summary>Stops the services started by <see cref="Start"/>.</summary>
    public virtual void Stop() { }

    /// <summary>A few counters for the progress line.</summary>
    public abstract string Progress();

    /// <summary>The driver loop (a service greenlet, not in the ledger).</summary>
    public void Drive()
    {
        var control = Context.Control;
        while (!control.Stopping)
        {
            if (control.Paused)
            {
                control.ParkedDrivers++;
                try { control.Resume.Wait(); }
                finally { control.ParkedDrivers--; }
                continue;
            }
            RunRound();
        }
    }

    /// <summary>One round, in its own frame: once it returns, nothing on the driver's stack keeps the round's
    /// greenlets (and their payloads) alive while the driver waits at the gate.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void RunRound()
    {
        var batch = Round();
        Rounds++;
        var done = Green.JoinAll(batch, RoundLimit);
        if (done.Count != batch.Count)
            Ledger.Violate($"{Name}: {batch.Count - done.Count} greenlet(s) of a round did not end within {RoundLimit.TotalSeconds} s: " +
                           string.Join(", ", batch.Where(g => !g.Dead).Select(g => $"{g} waiting on {g.WaitReason}")));
    }

    /// <summary>Kills <paramref name="victim"/> after a random delay of up to <paramref name="maxDelayMs"/>, from a
    /// tracked greenlet, and checks that the kill ended it.</summary>
    protected Greenlet KillLater(Greenlet victim, int maxDelayMs)
    {
        int delay = Random.Next(0, maxDelayMs + 1);
        bool foreign = Random.Next(5) == 0; // Kill is safe from any thread: one kill in five comes from the thread pool
        return Ledger.Spawn($"{Name}.killer", () =>
        {
            if (delay > 0) Green.Sleep(delay);
            if (foreign) Green.Wait(Task.Run(() => victim.Kill(block: true, timeout: TimeSpan.FromSeconds(30))));
            else victim.Kill(block: true, timeout: TimeSpan.FromSeconds(30));
            if (!victim.Dead) Ledger.Violate($"{victim} was still alive 30 s after Kill{(foreign ? " from another thread" : "")} (waiting on {victim.WaitReason}).");
        });
    }

    private static int StableHash(string s)
    {
        int h = 17;
        foreach (var c in s) h = unchecked(h * 31 + c);
        return h;
    }
}
