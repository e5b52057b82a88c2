using GreenRuntime.LowLevel;

namespace GreenRuntime.AspNetCore.Requests;

/// <summary>
/// The synchronization context of one request's greenlets: every continuation posted to it runs on the request's hub,
/// in a stackful greenlet (the request's own when it is waiting for work, else a helper), so code after an
/// <c>await</c> may block cooperatively like code before it. Safe to post from any thread. See RequestGreenlet.cs.
/// </summary>
internal sealed class RequestSynchronizationContext(RequestGreenlet request) : SynchronizationContext
{
    public override void Post(SendOrPostCallback d, object? state)
    {
        ArgumentNullException.ThrowIfNull(d);
        request.Post(d, state);
    }

    /// <summary>Runs <paramref name="d"/> now when the caller holds the request hub's baton; otherwise posts it and
    /// waits for it (a real wait: the caller is not on the request's hub).</summary>
    public override void Send(SendOrPostCallback d, object? state)
    {
        ArgumentNullException.ThrowIfNull(d);
        if (Parking.CurrentHub == request.Hub)
        {
            d(state);
            return;
        }
        using var done = new ManualResetEventSlim();
        Exception? error = null;
        request.Post(_ =>
        {
            try { d(state); }
            catch (Exception e) { error = e; }
            finally { done.Set(); }
        }, null);
        done.Wait();
        if (error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    public override SynchronizationContext CreateCopy() => this;
}
