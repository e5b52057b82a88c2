// One request in a greenlet: how the rest of the pipeline runs on a hub, where its awaits resume, and how it ends.
//
// Glossary
//   request greenlet  the stackful greenlet that runs `next(context)` for one request, placed on the least-loaded hub
//                     of the host's HubGroup; it stays on that hub.
//   helper            a stackful greenlet on the same hub that runs one continuation of the request (see step 3).
//
// The protocol
//   1. The middleware (on a Kestrel thread-pool thread) spawns the request greenlet and awaits a Task that the
//      greenlet completes: no pool thread waits. The greenlet is created there, so it runs under the request's
//      ExecutionContext (IHttpContextAccessor, Activity.Current, logging scopes flow in as they would into an await).
//      The middleware reads what it needs of the HttpContext first: once spawned, the greenlet owns the context.
//   2. The greenlet installs the request's RequestSynchronizationContext and calls `next(context)`: synchronous
//      endpoint code runs on its stack, and a blocking call parks the greenlet (Patch.All), not a thread.
//   3. When `next(context)` returns an unfinished Task (the pipeline awaits something), the request greenlet ends and
//      gives its carrier back: a suspended request holds no thread, as on plain Kestrel. Every continuation posted to
//      the request's context (an `await` inside the pipeline, from whatever thread completes the awaited operation)
//      is dispatched on the hub, under its baton, to a new helper greenlet on the same hub. So the continuation runs
//      on the request's hub, may block cooperatively, and never races with the request's other greenlets (one baton
//      per hub); and sync-over-async code does not deadlock: a greenlet parked in `task.Result` does not have to run
//      the continuation that would complete `task`, a helper does, exactly as a pool thread would without the
//      middleware.
//   4. When the pipeline's Task completes, the middleware's Task is completed with the pipeline's outcome (an
//      exception goes to Kestrel, which answers 500 as it would without the middleware), and Kestrel's continuation
//      runs right there, on the greenlet that completed it (the request greenlet when the pipeline finished without
//      awaiting, else the helper whose continuation finished it, else one spawned for it), shielded, until it awaits
//      the next request: handing it to a pool thread cost a thread wake-up per request (measured with wrk on the
//      "hello" endpoint: 19 instead of 23 µs of CPU per request).
//   5. With GreenletsOptions.KillAbortedRequests (off by default: an aborted request runs to its end, as on plain Kestrel,
//      since a kill interrupts library waits not written for it, such as a database pool's), RequestAborted kills the
//      request greenlet and its running helpers (on the hub), unless the app's own code asked
//      for the abort (HttpContext.Abort(), recorded by AppAbortRecorder) or upgraded the request (a websocket, recorded
//      by UpgradeRecorder: its RequestAborted is the connection's normal end): blocking code on their stacks
//      raises GreenletExit at its next blocking call, as a killed greenlet's code does. What the kill does not do is end
//      the request early. A helper not yet started when the abort came, or started after it, is killed once its body
//      begins: the continuation still runs (an await cancelled by RequestAborted resumes and its finally blocks
//      release what they hold; killing a greenlet that never ran would drop its continuation), and the middleware's
//      Task completes when the pipeline's Task does, as Kestrel waits for it without the middleware (before that, the
//      HttpContext is still in use). Only a request greenlet killed before its body ran ends the request at once
//      (nothing of the pipeline ever started).
//
// SignalR hub methods run the same way (GreenletHubFilter): starting the hub method plays `next(context)`, and the
// connection's ConnectionAborted plays RequestAborted.
//
// All state below marked "hub-only" is read and written only on the request's hub while holding its baton (in the
// request greenlet, a helper, or a hub callback), so it needs no lock; every other thread reaches it by Hub.Post.
//
// Rejected: awaiting the pipeline's Task on the request greenlet with no synchronization context (continuations would
// run on pool threads, where blocking code after the first await blocks the pool again: the starvation this
// integration exists to remove); keeping the request greenlet parked as a pump that runs the continuations while it is
// free (Green.Current stayed the same across most awaits, but every suspended request held a carrier thread: an
// endpoint awaiting a 20 ms delay under wrk at 1,000 connections ran 1,030 threads at 86-105 µs of CPU per request,
// against 44-47 threads and 63-80 µs with helpers, and a websocket or SignalR connection held one for its lifetime).

using GreenRuntime.LowLevel;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace GreenRuntime.AspNetCore.Requests;

/// <summary>One request running in a greenlet; see the header comment for the protocol.</summary>
internal sealed class RequestGreenlet
{
    private const string GreenletName = "aspnetcore request";
    private const string HelperName = "aspnetcore continuation";

    private readonly GreenletsHost _host;
    // What the greenlet runs: a work item's start, or else the rest of an HTTP request's pipeline (kept as the two, not
    // as a closure over them: one allocation less per request).
    private readonly Func<Task>? _start;
    private readonly RequestDelegate? _next;
    private readonly HttpContext? _http;
    // The pipeline's own Task once it has ended, which the middleware's Task mirrors through Unwrap (its exception
    // instances and its cancellation included, as if the middleware were not there), or a completed Task when the
    // request ends without an outcome to report.
    private readonly TaskCompletionSource<Task> _done = new(); // continuations inline: see End
    private readonly RequestSynchronizationContext _sync;
    private CancellationTokenRegistration _abortRegistration;
    private int _completed; // 1 once Complete has run: the in-flight count is left once, whichever path ends the request
    private Hub? _hub;
    private Greenlet? _main;

    // Hub-only state.
    private bool _bodyBegan;
    private bool _finished;
    private bool _aborted;
    private List<Greenlet>? _helpers;
    private Task? _pipeline; // once the request greenlet has ended with the pipeline suspended

    // Set (any thread) when the app's own code called HttpContext.Abort(), or upgraded the request (a websocket); read by
    // OnAborted.
    private volatile bool _abortedByApp;
    private volatile bool _upgraded;

    private RequestGreenlet(GreenletsHost host, Func<Task>? start, RequestDelegate? next, HttpContext? http)
    {
        _host = host;
        _start = start;
        _next = next;
        _http = http;
        _sync = new RequestSynchronizationContext(this);
    }

    /// <summary>The hub the request runs on (set before anything can be posted to its context).</summary>
    internal Hub Hub => _hub ?? throw new InvalidOperationException("Internal error: the request's hub is read before its greenlet was placed.");

    /// <summary>Step 1: places the request's greenlet and returns the Task that completes when it is done.</summary>
    public static Task RunAsync(GreenletsHost host, HttpContext http, RequestDelegate next)
    {
        // Everything the middleware needs of the HttpContext is read before the spawn: from then on the greenlet runs the
        // pipeline on a hub's thread, possibly at once, and HttpContext is not thread-safe (two threads filling its
        // feature cache can each see the other's reset, which surfaces as a NullReferenceException in the endpoint).
        var aborted = http.RequestAborted;
        var request = new RequestGreenlet(host, null, next, http);
        // What the recorders note only decides whether an abort kills (OnAborted): without kills, nothing to wrap.
        if (host.KillsAborted)
        {
            if (http.Features.Get<IHttpRequestLifetimeFeature>() is { } lifetime)
                http.Features.Set<IHttpRequestLifetimeFeature>(new AppAbortRecorder(lifetime, request));
            if (http.Features.Get<IHttpUpgradeFeature>() is { IsUpgradableRequest: true } upgrade)
                http.Features.Set<IHttpUpgradeFeature>(new UpgradeRecorder(upgrade, request));
            if (http.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true } connect)
                http.Features.Set<IHttpExtendedConnectFeature>(new ExtendedConnectRecorder(connect, request));
        }
        return request.Start(aborted, GreenletName);
    }

    /// <summary>Step 1 for work that is not an HTTP request (a SignalR hub method): <paramref name="start"/> plays the
    /// pipeline, and <paramref name="aborted"/> the request's <c>RequestAborted</c>.</summary>
    /// <param name="host">The host whose hubs run it.</param>
    /// <param name="start">Starts the work on the greenlet; its Task's outcome is the returned Task's.</param>
    /// <param name="aborted">Kills the work's greenlets when it fires (step 5).</param>
    /// <param name="name">The greenlet's name.</param>
    public static Task RunAsync(GreenletsHost host, Func<Task> start, CancellationToken aborted, string name) =>
        new RequestGreenlet(host, start, null, null).Start(aborted, name);

    /// <summary>Counts the request in flight (<see cref="GreenletsHost.Enter"/>) and spawns its greenlet; <see cref="Complete"/>
    /// counts it out.</summary>
    private Task Start(CancellationToken aborted, string name)
    {
        // The Task returned is the only one between the pipeline's outcome and the caller's await: the count and the abort
        // registration are settled in Complete, on the thread that completes it, instead of by an async wrapper each
        // (two state machines and their continuations per request).
        var done = _done.Task.Unwrap();
        _host.Enter();
        Greenlet g;
        try
        {
            g = _host.Group.Spawn(Body, name);
        }
        catch
        {
            _host.Exit();
            throw;
        }
        _main = g;
        _hub = g.Hub;
        // Registered after the spawn: the callback reads _main and the hub. A greenlet that ends before the registration
        // is made has already run Complete, which finds no registration to withdraw; the one made now is then withdrawn
        // here, since nothing else would.
        if (aborted.CanBeCanceled && _host.KillsAborted)
        {
            _abortRegistration = aborted.UnsafeRegister(static s => ((RequestGreenlet)s!).OnAborted(), this);
            // A full fence between the write of the registration and the read of _completed, as Complete's exchange is
            // between its write of _completed and its read of the registration: one of the two sees the other's write.
            Interlocked.MemoryBarrier();
            if (_completed != 0) _abortRegistration.Unregister();
        }
        return done;
    }

    /// <summary>Ends the request for its caller, once (any thread; the first call wins): withdraws the abort registration,
    /// counts the request out of the host's in-flight count, and completes the Task <see cref="Start"/> returned, whose
    /// continuation (the caller's) runs inline here.</summary>
    /// <remarks>The registration is withdrawn without waiting for a callback running at that moment: that callback only
    /// posts <see cref="AbortOnHub"/>, which finds the request finished, or ends the request through this method, which
    /// has already run.</remarks>
    private void Complete(Task outcome)
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0) return;
        _abortRegistration.Unregister();
        _host.Exit();
        _done.TrySetResult(outcome);
    }

    // ---- the request greenlet ------------------------------------------------------------------------------------

    /// <summary>Steps 2–4, on the request greenlet.</summary>
    private void Body()
    {
        _hub = Parking.CurrentHub;
        _bodyBegan = true;
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(_sync);
        Task? outcome = null;
        bool suspended = false;
        try
        {
            Task pipeline;
            try
            {
                pipeline = _start is { } start ? start() : _next!(_http!);
            }
            catch (Exception e) when (e is not GreenletExit || !_aborted)
            {
                // Also a GreenletExit that is not this request's kill: one rethrown by a Lazy<T> whose factory a killed
                // request ran is an endpoint failure (a 500), not the end of an aborted request.
                pipeline = Task.FromException(e);
            }
            if (!pipeline.IsCompleted)
            {
                // Step 3: the greenlet ends here and its carrier goes back to the pool; helpers run the continuations.
                suspended = true;
                _pipeline = pipeline;
                pipeline.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(OnPipelineCompleted);
                return;
            }
            outcome = _aborted ? Task.CompletedTask : pipeline;
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
            if (!suspended)
            {
                _finished = true;
                End(outcome ?? Task.CompletedTask); // null: killed (or a bug of ours), the request ends without an outcome to report
            }
        }
    }

    /// <summary>Step 4: hands the pipeline's outcome to the middleware. What Kestrel does next with the connection (finish
    /// the response, start reading the next request) runs right here, on this greenlet's carrier, until its first await
    /// that has to wait: on a thread-pool thread it would cost that thread a wake-up per request. It runs shielded, so a
    /// kill never lands in Kestrel's code, and with no synchronization context, as on the pool.</summary>
    private void End(Task outcome)
    {
        using var shield = Green.Shield();
        t_ending = true;
        try
        {
            Complete(outcome);
        }
        finally
        {
            t_ending = false;
        }
    }

    [ThreadStatic] private static bool t_ending;

    /// <summary>Whether the caller is the continuation run by <see cref="End"/> (Kestrel's, or SignalR's dispatch loop): the
    /// next request of a connection that Kestrel reads at once (pipelined) is not "already in a greenlet", it needs one of
    /// its own.</summary>
    internal static bool InCallerContinuation => t_ending;

    /// <summary><see cref="End"/> from a hub callback or a foreign thread, where Kestrel's code must not run inline.</summary>
    private void EndElsewhere() =>
        ThreadPool.UnsafeQueueUserWorkItem(static r => r.Complete(Task.CompletedTask), this, preferLocal: false);

    /// <summary>Runs one posted callback in the calling helper, with the request's context.</summary>
    /// <param name="callback">The continuation.</param>
    private void RunPosted(PostedCallback callback)
    {
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(_sync);
        try
        {
            callback.Callback(callback.State);
        }
        catch (Exception e) when (e is not GreenletExit)
        {
            // An await's continuation keeps its exceptions in its Task; only a raw Post (async void) lands here.
            AspNetCoreLog.PostedCallbackFailed(_host.Logger, e);
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }
    }

    // ---- dispatch (step 3) and completion (step 4) ---------------------------------------------------------------

    /// <summary>A continuation posted to the request's context, from any thread.</summary>
    internal void Post(SendOrPostCallback callback, object? state)
    {
        var posted = new PostedCallback(this, callback, state);
        var hub = Hub;
        if (Parking.CurrentHub == hub)
        {
            Dispatch(posted);
            return;
        }
        try
        {
            hub.Post(posted.Dispatch);
        }
        catch (ObjectDisposedException)
        {
            // The host has stopped and its hubs are gone: the continuation still runs (its finally blocks too), as it
            // would without the middleware.
            ThreadPool.UnsafeQueueUserWorkItem(static p => p.Callback(p.State), posted, preferLocal: false);
        }
    }

    /// <summary>Hub-only: to a helper greenlet on this hub.</summary>
    internal void Dispatch(PostedCallback posted)
    {
        AssertOnHub();
        var helper = Green.Spawn(() => RunHelper(posted), HelperName);
        if (_finished) return; // a continuation after the request ended (fire-and-forget work): nothing to kill it for
        var helpers = _helpers ??= new List<Greenlet>();
        if (helpers.Count >= 8) helpers.RemoveAll(static h => h.Dead);
        helpers.Add(helper);
    }

    /// <summary>A helper's body: the continuation, under a kill when the request was aborted before the helper began.</summary>
    private void RunHelper(PostedCallback posted)
    {
        if (_aborted && !_finished)
        {
            // Killed at its next blocking call, as the helpers running at the abort were (step 5): the hub runs this
            // callback only once the helper has parked or ended.
            var self = Green.Current;
            Hub.Post(() => self.Kill(block: false));
        }
        RunPosted(posted);
    }

    /// <summary>The suspended pipeline's Task completed (any thread): step 4, on a greenlet of the request's hub.</summary>
    private void OnPipelineCompleted()
    {
        var hub = Hub;
        if (Parking.CurrentHub == hub && Parking.CanPark)
        {
            Finish(); // in the helper (or another greenlet of the hub) whose code completed it
            return;
        }
        try
        {
            // A hub callback or another thread, where Kestrel's code must not run: a greenlet of the hub runs it.
            hub.Post(() => Green.Spawn(Finish, GreenletName));
        }
        catch (ObjectDisposedException)
        {
            EndElsewhere(); // the hub is gone
        }
    }

    /// <summary>Hub-only, on a greenlet: completes the middleware's Task with the suspended pipeline's outcome, with no
    /// synchronization context (the caller may be a helper running under the request's).</summary>
    private void Finish()
    {
        AssertOnHub();
        if (_finished) return;
        _finished = true;
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        try
        {
            End(_aborted ? Task.CompletedTask : _pipeline!);
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }
    }

    /// <summary>Checks the header's rule that hub-only state is touched only under the request hub's baton.</summary>
    [System.Diagnostics.Conditional("DEBUG")]
    private void AssertOnHub()
    {
        if (Parking.CurrentHub != _hub)
            throw new InvalidOperationException($"Invariant broken: a request's hub-only state was touched off its hub {_hub} (on {(object?)Parking.CurrentHub ?? "a thread of no hub"}); it must go through Hub.Post.");
    }

    // ---- abort (step 5) ------------------------------------------------------------------------------------------

    /// <summary>RequestAborted fired (any thread).</summary>
    private void OnAborted()
    {
        // The app dropped the connection itself (HttpContext.Abort(): a rejected request, a quota exceeded) and goes on
        // running, as it would without the middleware: its audit log or cleanup after the call must not be killed.
        if (_abortedByApp) return;
        // An upgraded request (a websocket, over HTTP/1.1's Upgrade or HTTP/2's extended CONNECT) sees RequestAborted when
        // its connection closes: the normal end of that connection, not a client giving up on a response. The code
        // still running for it is the connection's cleanup (SignalR's OnDisconnectedAsync runs in such a request's
        // continuations), which a kill cut short at its first blocking call; what reads or writes the connection sees
        // it closed by itself, as without the middleware.
        if (_upgraded) return;
        try
        {
            Hub.Post(AbortOnHub);
        }
        catch (ObjectDisposedException)
        {
            EndElsewhere(); // the hub is gone and took the request greenlet with it
        }
    }

    /// <summary>Hub-only: kills the request greenlet and its running helpers (step 5).</summary>
    private void AbortOnHub()
    {
        AssertOnHub();
        if (_finished) return;
        _aborted = true;
        var main = _main!;
        main.Kill(block: false);
        if (_helpers != null)
            foreach (var helper in _helpers)
                if (!helper.Dead && helper.State != GreenletState.Scheduled) helper.Kill(block: false); // RunHelper kills the others
        // Killed before it ran: its body never will, so nothing else completes the middleware's Task.
        if (!_bodyBegan && main.Dead) EndElsewhere();
    }

    /// <summary>The request's upgrade feature, as seen by the pipeline after <c>UseGreenlets()</c>: it records that the
    /// request was upgraded (<see cref="OnAborted"/>).</summary>
    private sealed class UpgradeRecorder(IHttpUpgradeFeature inner, RequestGreenlet request) : IHttpUpgradeFeature
    {
        public bool IsUpgradableRequest => inner.IsUpgradableRequest;

        public Task<Stream> UpgradeAsync()
        {
            request._upgraded = true;
            return inner.UpgradeAsync();
        }
    }

    /// <summary>HTTP/2's and HTTP/3's way to open a websocket, recorded like <see cref="UpgradeRecorder"/>.</summary>
    private sealed class ExtendedConnectRecorder(IHttpExtendedConnectFeature inner, RequestGreenlet request) : IHttpExtendedConnectFeature
    {
        public bool IsExtendedConnect => inner.IsExtendedConnect;

        public string? Protocol => inner.Protocol;

        public ValueTask<Stream> AcceptAsync()
        {
            request._upgraded = true;
            return inner.AcceptAsync();
        }
    }

    /// <summary>
    /// The request's lifetime feature, as seen by the pipeline after <c>UseGreenlets()</c>: it records an abort the app
    /// asks for (<see cref="HttpContext.Abort"/>), which Kestrel reports through <c>RequestAborted</c> like a client that
    /// went away. Only the second kills the request greenlet (step 5).
    /// </summary>
    private sealed class AppAbortRecorder(IHttpRequestLifetimeFeature inner, RequestGreenlet request) : IHttpRequestLifetimeFeature
    {
        public CancellationToken RequestAborted
        {
            get => inner.RequestAborted;
            set => inner.RequestAborted = value;
        }

        public void Abort()
        {
            request._abortedByApp = true;
            inner.Abort();
        }
    }
}
