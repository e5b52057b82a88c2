using Microsoft.AspNetCore.SignalR;

namespace GreenRuntime.AspNetCore.SignalR;

/// <summary>
/// Runs each SignalR hub method, and each hub's <c>OnConnectedAsync</c>/<c>OnDisconnectedAsync</c>, in a greenlet of the
/// host's hubs, the way <see cref="GreenletsApplicationBuilderExtensions.UseGreenlets"/> runs a request: blocking code in
/// a hub parks its greenlet, and its <c>await</c>s resume on that hub.
/// </summary>
/// <remarks>
/// <para>Why a filter and not the middleware: SignalR starts each connection's handler on a thread-pool thread of its
/// own, off the request that carries the connection (on purpose, so that a blocking hub does not hold up the
/// transport), so the request's greenlet does not run the hub methods.</para>
/// <para><c>AddGreenlets</c> registers it for every hub; it does nothing until <c>UseGreenlets()</c> has put the
/// middleware into the pipeline, so an app that uses the hubs only for background greenlets keeps SignalR as it is.
/// Invocations count as in flight for the host's graceful stop but take no <see cref="GreenletsOptions.MaxConcurrentRequests"/>
/// slot: the connection's own request already holds one, and waiting for another could wait on itself.</para>
/// <para>With <see cref="GreenletsOptions.KillAbortedRequests"/>, the connection's <c>ConnectionAborted</c> kills a
/// running hub method's greenlet, as <c>RequestAborted</c> kills a request's. A streaming method's items are produced
/// after the method has returned, outside the filter: its <c>IAsyncEnumerable</c> is handed to SignalR wrapped
/// (<see cref="GreenletStream"/>), so that each of its steps runs in a greenlet too.</para>
/// </remarks>
internal sealed class GreenletHubFilter(GreenletsHost host) : IHubFilter
{
    private const string MethodName = "signalr hub method";
    private const string ConnectedName = "signalr connected";
    private const string DisconnectedName = "signalr disconnected";

    /// <summary>Whether the call runs where it is: only without <c>UseGreenlets()</c> in the pipeline.</summary>
    /// <remarks>
    /// <para>Invariant: with <c>UseGreenlets()</c>, every invocation gets a greenlet of its own, which (with
    /// <see cref="GreenletsOptions.KillAbortedRequests"/>) the connection's <c>ConnectionAborted</c> kills. Being in a
    /// greenlet of the host already is not enough: that greenlet belongs to whatever placed it, and the connection's
    /// abort does not reach it.</para>
    /// <para>SignalR's dispatch does reach this filter on such greenlets. The websocket transport runs in the
    /// continuations of the connection's upgraded request, and now and then (timing: the handshake completing there) a
    /// continuation of SignalR's connection handler is posted to that request's synchronization context, so its dispatch
    /// loop, and every hub method it starts, runs in that request's continuation greenlets, which nothing kills (the
    /// request's <c>RequestAborted</c> is the connection's normal end). A hub method run in place there outlived its
    /// closed connection, parked in <c>Thread.Sleep</c>: in a loop of the closed-connection test on 2 loaded cores, 21 of
    /// 24 rounds ran the method in place and all 21 hung; with a greenlet per invocation, 0 of 80. A hub filter added
    /// before <c>AddGreenlets</c> that calls the rest of the chain from a greenlet of its own does the same.</para>
    /// </remarks>
    private bool RunsInPlace => !host.RunsRequests;

    public async ValueTask<object?> InvokeMethodAsync(HubInvocationContext invocationContext, Func<HubInvocationContext, ValueTask<object?>> next)
    {
        if (RunsInPlace) return await next(invocationContext).ConfigureAwait(false);
        var aborted = invocationContext.Context.ConnectionAborted;
        var result = await host.RunInGreenletAsync(() => next(invocationContext).AsTask(), aborted, MethodName).ConfigureAwait(false);
        return GreenletStream.Wrap(host, result, aborted);
    }

    public Task OnConnectedAsync(HubLifetimeContext context, Func<HubLifetimeContext, Task> next) =>
        RunsInPlace ? next(context) : host.RunInGreenletAsync(() => next(context), context.Context.ConnectionAborted, ConnectedName);

    // Not under ConnectionAborted: the connection is gone already (that is what the event reports), and its cleanup runs.
    public Task OnDisconnectedAsync(HubLifetimeContext context, Exception? exception, Func<HubLifetimeContext, Exception?, Task> next) =>
        RunsInPlace ? next(context, exception) : host.RunInGreenletAsync(() => next(context, exception), CancellationToken.None, DisconnectedName);
}
