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

    /// <summary>
    /// Whether a request whose client went away (<c>HttpContext.RequestAborted</c>), and a SignalR hub method whose
    /// connection closed (<c>ConnectionAborted</c>), is killed: the blocking code on its greenlets raises
    /// <see cref="GreenletExit"/> at its next blocking call. Default false: it runs to its end, as on plain Kestrel, and
    /// code that wants to stop early watches the token.
    /// </summary>
    /// <remarks>A kill interrupts whatever the code waits in, and library waits are not all written for that. With a
    /// database pool that is full, the kill of a request waiting in Npgsql's synchronous <c>Open()</c> leaves the pool's
    /// queued read behind, which takes the next connection given back for nobody: measured with a pool of 10 under
    /// ordinary client aborts, one or two bursts lost every slot, and every later <c>Open</c> failed with "the connection
    /// pool has been exhausted" until the process restarted. A kill in the middle of a query reaches the driver as a network
    /// failure, and Npgsql then closes every idle connection of the pool. Turn it on for servers whose endpoints do not
    /// wait on such libraries, or together with a <see cref="MaxConcurrentRequests"/> no larger than the pool, and see
    /// docs/patching.md ("Libraries whose waits must not be interrupted").</remarks>
    public bool KillAbortedRequests { get; set; }

    /// <summary>
    /// Carrier threads created when the host creates its hubs, and kept until it stops, however long they idle
    /// (<see cref="HubOptions.PrestartCarriers"/>). Default 0: carriers are created as requests first block (a thread each,
    /// 0.1–0.4 ms, inside the first burst of traffic) and those idle for 10 s end. Set it to the number of requests you
    /// expect to be blocked at once in the first seconds after a start (at most <see cref="MaxConcurrentRequests"/> when
    /// that is set) to pay those thread creations before the server takes traffic. The hubs share one pool of carriers: this
    /// is the number for the process, not per hub. Must not be negative, nor above the carrier limit.
    /// </summary>
    public int PrestartCarriers { get; set; }

    /// <summary>Checks the ranges; the message says which setting is wrong.</summary>
    internal void Validate()
    {
        if (Hubs is < 0 or > 1024)
            throw new ArgumentOutOfRangeException(nameof(Hubs), Hubs, "GreenletsOptions.Hubs must be between 0 (one hub per CPU) and 1024.");
        if (MaxConcurrentRequests < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxConcurrentRequests), MaxConcurrentRequests, "GreenletsOptions.MaxConcurrentRequests must not be negative (0: no limit of its own, the carrier limit applies).");
        if (PrestartCarriers < 0)
            throw new ArgumentOutOfRangeException(nameof(PrestartCarriers), PrestartCarriers, "GreenletsOptions.PrestartCarriers must not be negative (0: carriers are created as requests need them).");
    }
}
