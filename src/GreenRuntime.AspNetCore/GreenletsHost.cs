using GreenRuntime.AspNetCore.Requests;
using GreenRuntime.LowLevel;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace GreenRuntime.AspNetCore;

/// <summary>
/// What one host's greenlet integration owns besides its <see cref="HubGroup"/>: the one-time patching, the limit on
/// concurrent requests, and the count of requests in flight that the group's disposal waits for.
/// </summary>
/// <remarks>
/// <para><b>Lifetime.</b> A singleton of the host's container that depends on the <see cref="HubGroup"/> singleton, so
/// the container (which disposes singletons in the reverse order of their creation) disposes this first: its disposal
/// waits until the requests still running in greenlets have finished (bounded by the host's shutdown timeout), and
/// only then does the container dispose the group, whose hubs kill whatever is left. Kestrel's own graceful stop has
/// normally drained the requests by then; the wait covers servers that do not drain (the test server) and a drain
/// that timed out.</para>
/// </remarks>
internal sealed class GreenletsHost : IDisposable, IAsyncDisposable
{
    private static readonly Lock s_patchGate = new();
    private static PatchReport? s_patchReport;

    private readonly ILogger _logger;
    private readonly TimeSpan _shutdownTimeout;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _inFlight;
    private volatile bool _stopping;

    public GreenletsHost(HubGroup group, IOptions<GreenletsOptions> options, ILoggerFactory loggerFactory, IOptions<HostOptions>? hostOptions = null)
    {
        Group = group;
        var o = options.Value;
        _logger = loggerFactory.CreateLogger(AspNetCoreLog.Category);
        _shutdownTimeout = hostOptions?.Value.ShutdownTimeout ?? TimeSpan.FromSeconds(30);
        if (o.PatchAll) PatchOnce(loggerFactory);
        Limit = o.MaxConcurrentRequests > 0 ? new RequestQueue(o.MaxConcurrentRequests) : null;
        KillsAborted = o.KillAbortedRequests;
        AspNetCoreLog.Started(_logger, group.Hubs.Count, o.MaxConcurrentRequests > 0 ? o.MaxConcurrentRequests.ToString(System.Globalization.CultureInfo.InvariantCulture) : "the carrier limit");
    }

    /// <summary>The hubs requests run on.</summary>
    public HubGroup Group { get; }

    /// <summary>The FIFO gate of <see cref="GreenletsOptions.MaxConcurrentRequests"/>; null without a limit.</summary>
    public RequestQueue? Limit { get; }

    public ILogger Logger => _logger;

    /// <summary><see cref="GreenletsOptions.KillAbortedRequests"/>: whether an abort kills the work's greenlets.</summary>
    public bool KillsAborted { get; }

    /// <summary>Requests that entered a greenlet and have not left it.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>The report of this process's one <see cref="Patch.All"/> (null until a host with PatchAll made it).</summary>
    internal static PatchReport? PatchReport => s_patchReport;

    /// <summary>
    /// Patch.All once per process: several hosts in one process (tests, a host restarted in place) share the patches,
    /// and a second call would only report every method as already patched.
    /// </summary>
    private void PatchOnce(ILoggerFactory loggerFactory)
    {
        lock (s_patchGate)
        {
            if (s_patchReport != null) return;
            var report = Patch.All(new PatchOptions { LoggerFactory = loggerFactory });
            s_patchReport = report;
            AspNetCoreLog.Patched(_logger, report.Patched.Count, report.AlreadyPatched.Count, report.Refused.Count);
        }
    }

    /// <summary>Whether <see cref="GreenletsApplicationBuilderExtensions.UseGreenlets"/> put the middleware into the app's
    /// pipeline: SignalR hub methods run in greenlets only then (see GreenletHubFilter).</summary>
    public bool RunsRequests { get; set; }

    /// <summary>
    /// Whether the caller already runs in one of this host's greenlets, so that work it starts needs no greenlet of its
    /// own (the middleware's test). Any other hub does not count: a pool thread keeps the hub that code calling Green.*
    /// on it once created; nor does the continuation an ended request runs for its caller (Kestrel's, which may read the
    /// connection's next request at once). SignalR's hub filter does not use it: a hub method always gets a greenlet of
    /// its own, the one its connection's abort kills (GreenletHubFilter).
    /// </summary>
    public bool InGreenlet => Parking.CurrentHub is { } hub && Group.Hubs.Contains(hub) && !RequestGreenlet.InCallerContinuation;

    /// <summary>Counts a request (or hub method) in as it is placed in a greenlet; <see cref="RequestGreenlet"/> counts it
    /// out exactly once, right before the Task it returned completes. Work that arrives while the host stops still runs in
    /// greenlets: the group is disposed only after the count has dropped to zero (or the shutdown timeout passed).</summary>
    internal void Enter() => Interlocked.Increment(ref _inFlight);

    /// <summary><paramref name="start"/> in a greenlet of this host's hubs, as a request's pipeline runs
    /// (<see cref="RequestGreenlet"/>), counted as in flight; <paramref name="aborted"/> kills the greenlets it runs in.</summary>
    public Task RunInGreenletAsync(Func<Task> start, CancellationToken aborted, string name) =>
        RequestGreenlet.RunAsync(this, start, aborted, name);

    /// <summary>
    /// <see cref="RunInGreenletAsync(Func{Task}, CancellationToken, string)"/> with the result of <paramref name="start"/>'s
    /// Task. After an abort the run completes without the work's exception, so the work's own outcome is what the caller
    /// gets: a <c>GreenletExit</c>, or what it returned if it caught the kill; an abort that came before the work began
    /// is an <see cref="OperationCanceledException"/>.
    /// </summary>
    public async Task<T> RunInGreenletAsync<T>(Func<Task<T>> start, CancellationToken aborted, string name)
    {
        Task<T>? started = null;
        await RequestGreenlet.RunAsync(this, () => started = start(), aborted, name).ConfigureAwait(false);
        return started is null
            ? throw new OperationCanceledException("The connection was aborted before the work began in its greenlet.", aborted)
            : await started.ConfigureAwait(false);
    }

    /// <summary>Counts work out; the last one out of a stopping host ends the shutdown wait.</summary>
    internal void Exit()
    {
        if (Interlocked.Decrement(ref _inFlight) == 0 && _stopping) _drained.TrySetResult();
    }

    /// <summary>Waits for the requests in flight (up to the host's shutdown timeout); the group is disposed after this.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!BeginStop()) return;
        var finished = await Task.WhenAny(_drained.Task, Task.Delay(_shutdownTimeout)).ConfigureAwait(false);
        EndStop(finished == _drained.Task);
    }

    public void Dispose()
    {
        if (!BeginStop()) return;
        EndStop(_drained.Task.Wait(_shutdownTimeout));
    }

    private bool BeginStop()
    {
        if (_stopping) return false;
        _stopping = true;
        // A full fence: the last Exit decrements (a full fence too) then reads _stopping, so one of the two sees the other.
        // A volatile write followed by a volatile read may be reordered, and then both would miss.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _inFlight) == 0) _drained.TrySetResult();
        return true;
    }

    private void EndStop(bool drained)
    {
        if (!drained) AspNetCoreLog.StoppedWithRequests(_logger, InFlight, _shutdownTimeout);
    }
}
