using Microsoft.AspNetCore.Http;

namespace GreenRuntime.AspNetCore.Requests;

/// <summary>
/// The middleware <see cref="GreenletsApplicationBuilderExtensions.UseGreenlets"/> adds: each request takes a slot of
/// <see cref="GreenletsOptions.MaxConcurrentRequests"/> (waiting in FIFO order when none is free), then runs the rest of
/// the pipeline in a greenlet (<see cref="RequestGreenlet"/>). Runs on Kestrel's thread-pool threads and never blocks
/// one: every wait here is an await.
/// </summary>
internal sealed class GreenletMiddleware(RequestDelegate next, GreenletsHost host)
{
    public Task InvokeAsync(HttpContext context)
    {
        // Already on a greenlet of this host (UseGreenlets twice, or a branch that re-enters the pipeline): the request has
        // one.
        if (host.InGreenlet) return next(context);
        if (host.Limit is { } limit)
        {
            var slot = limit.EnterAsync(context.RequestAborted);
            if (!slot.IsCompletedSuccessfully) return RunAfterSlotAsync(slot, limit, context);
            return RunHoldingSlotAsync(limit, context);
        }
        return RunAsync(context);
    }

    private async Task RunAfterSlotAsync(Task slot, RequestQueue limit, HttpContext context)
    {
        try
        {
            await slot.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return; // the client went away while the request waited: it never ran
        }
        await RunHoldingSlotAsync(limit, context).ConfigureAwait(false);
    }

    private async Task RunHoldingSlotAsync(RequestQueue limit, HttpContext context)
    {
        try
        {
            await RunAsync(context).ConfigureAwait(false);
        }
        finally
        {
            limit.Exit();
        }
    }

    private Task RunAsync(HttpContext context) => RequestGreenlet.RunAsync(host, context, next);
}
