using GreenRuntime.AspNetCore.Requests;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace GreenRuntime.AspNetCore;

/// <summary>Puts the greenlet middleware into an ASP.NET Core pipeline.</summary>
public static class GreenletsApplicationBuilderExtensions
{
    /// <summary>
    /// Runs everything after this point of the pipeline, for each request, in a stackful greenlet on one of the hubs of
    /// <see cref="GreenletsServiceCollectionExtensions.AddGreenlets"/>: synchronous endpoint code may block (with
    /// <see cref="Patch.All"/>, a blocking call parks the request's greenlet, not a thread-pool thread), and
    /// <c>await</c>s inside the pipeline resume on that hub.
    /// </summary>
    /// <remarks>
    /// <para><b>What stays as without it.</b> <c>IHttpContextAccessor</c>, <c>Activity.Current</c> (the request's trace),
    /// logging scopes and other <c>AsyncLocal</c> values flow into the greenlet as into an <c>await</c>;
    /// <c>HttpContext.User</c> and the request's services are the request's. An exception from the pipeline reaches the
    /// middleware before this one (or Kestrel, which answers 500) unchanged.</para>
    /// <para><b>What changes.</b> Continuations run on the request's hub, one at a time with every other greenlet of that
    /// hub, each in a helper greenlet of that hub (a request suspended in an <c>await</c> holds no thread), so
    /// <c>Green.Current</c> and <c>GreenletLocal</c> values are not stable across an <c>await</c> (use
    /// <c>HttpContext.Items</c> or an <c>AsyncLocal</c>). <c>ConfigureAwait(false)</c>
    /// leaves the hub as it would leave any synchronization context. With <see cref="GreenletsOptions.KillAbortedRequests"/>,
    /// <c>HttpContext.RequestAborted</c> kills the request's greenlets: their next blocking point raises
    /// <c>GreenletExit</c>; without it (the default) an aborted request runs to its end, as on plain Kestrel.</para>
    /// <para>Synchronous body I/O (with <c>AllowSynchronousIO</c>) parks the greenlet under <see cref="Patch.All"/>.</para>
    /// <para>SignalR hub methods run in greenlets too, one per invocation (SignalR runs them off the connection's request,
    /// so they are not "after" this middleware): see <see cref="GreenletsServiceCollectionExtensions.AddGreenlets"/>.</para>
    /// <para>Place it after middleware that need not run in a greenlet (exception pages, static files, routing) and before
    /// the endpoints that block.</para>
    /// </remarks>
    /// <param name="app">The application's pipeline.</param>
    /// <returns><paramref name="app"/>, for chaining.</returns>
    /// <exception cref="InvalidOperationException"><see cref="GreenletsServiceCollectionExtensions.AddGreenlets"/> was not called.</exception>
    public static IApplicationBuilder UseGreenlets(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var host = app.ApplicationServices.GetService<GreenletsHost>()
            ?? throw new InvalidOperationException("UseGreenlets() needs the greenlet services: call builder.Services.AddGreenlets() when configuring the host's services.");
        host.RunsRequests = true;
        return app.Use(next => new GreenletMiddleware(next, host).InvokeAsync);
    }
}
