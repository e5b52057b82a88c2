namespace GreenRuntime.AspNetCore;

/// <summary>
/// Settings of <see cref="GreenletsServiceCollectionExtensions.AddGreenlets"/>. Every property has a documented default
/// and range; they are read once, when the host creates its hubs.
/// </summary>
public sealed class GreenletsOptions
{
    /// <summary>
    /// How many hubs serve requests, each on a thread of its own (a request stays on the hub it was placed on, the
    /// least-loaded one when it arrives). Default 0: one per CPU (<see cref="Environment.ProcessorCount"/>). Range 0–1024.
    /// </summary>
    public int Hubs { get; set; }

    /// <summary>
    /// Whether the host calls <see cref="Patch.All"/> once (per process) when it creates its hubs, so that blocking BCL
    /// calls in endpoint code park only their request's greenlet. Default true. Its report is logged through the host's
    /// <c>ILoggerFactory</c> (category <c>GreenRuntime.AspNetCore</c>; refused methods as warnings of <c>GreenRuntime.Patch</c>).
    /// </summary>
    /// <remarks>Patching is process-wide and is not undone when the host stops. Code that does not run on a greenlet
    /// (Kestrel itself, thread-pool work, other hosts) calls the original methods and behaves exactly as before.</remarks>
    public bool PatchAll { get; set; } = true;

    /// <summary>
    /// The most requests that run in greenlets at once; the ones beyond it wait, in arrival order, for a running one to
    /// finish (they are never rejected). Default 0: no limit of its own, the carrier limit applies (each hub runs as
    /// many suspended stackful greenlets as it may have carrier threads, a limit read from the kernel, and a greenlet
    /// that needs a carrier when none is left waits for one in FIFO order). Must not be negative.
    /// </summary>
    /// <remarks>A waiting request holds its connection and its <c>HttpContext</c>, but no thread and no greenlet; if the
    /// client goes away while it waits (<c>RequestAborted</c>), it leaves the queue.</remarks>
    public int MaxConcurrentRequests { get; set; }

    /// <summary>Checks the ranges; the message says which setting is wrong.</summary>
    internal void Validate()
    {
        if (Hubs is < 0 or > 1024)
            throw new ArgumentOutOfRangeException(nameof(Hubs), Hubs, "GreenletsOptions.Hubs must be between 0 (one hub per CPU) and 1024.");
        if (MaxConcurrentRequests < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxConcurrentRequests), MaxConcurrentRequests, "GreenletsOptions.MaxConcurrentRequests must not be negative (0: no limit of its own, the carrier limit applies).");
    }
}
