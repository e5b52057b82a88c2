namespace GreenRuntime.Scheduling;

/// <summary>
/// The synchronization context of one stackless greenlet: every continuation its async code posts becomes a
/// ready-queue item that runs on the hub, under the baton, as that greenlet. Safe to post from any thread.
/// </summary>
internal sealed class HubSynchronizationContext : SynchronizationContext
{
    private readonly Greenlet _greenlet;

    public HubSynchronizationContext(Greenlet greenlet) => _greenlet = greenlet;

    public override void Post(SendOrPostCallback d, object? state) =>
        _greenlet.Hub.PostItem(RunItem.ForContinuation(_greenlet, d, state));

    public override void Send(SendOrPostCallback d, object? state)
    {
        if (_greenlet.Hub.IsOnHubThread)
        {
            d(state);
            return;
        }
        using var done = new ManualResetEventSlim();
        Exception? error = null;
        Post(_ =>
        {
            try { d(state); }
            catch (Exception e) { error = e; }
            finally { done.Set(); }
        }, null);
        done.Wait();
        if (error != null) throw new AggregateException(error);
    }

    public override SynchronizationContext CreateCopy() => this;
}
