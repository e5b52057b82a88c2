namespace GreenRuntime.Tests.Core;

/// <summary>The scheduler step a returning released call runs with the idle hub's baton (Hub.IdleLending.cs) runs on the
/// greenlet's own thread: what it runs there (hub callbacks) must not see the greenlet's synchronization context or
/// AsyncLocal values, as the scheduler a parked greenlet's thread runs does not (AmbientContext.cs, step 3).</summary>
public class IdleBatonLendingAmbientTests : HubTest
{
    private sealed class MarkerContext : SynchronizationContext;

    private static readonly AsyncLocal<string?> Marker = new();

    [Test]
    public void HubCallbacksRunByALentReturnSeeNeitherTheGreenletsSynchronizationContextNorItsAsyncLocals()
    {
        var hub = Hub;
        var marker = new MarkerContext();
        int callbacks = 0, sawContext = 0, sawLocal = 0;
        var g = Green.Spawn(() =>
        {
            SynchronizationContext.SetSynchronizationContext(marker);
            Marker.Value = "greenlet";
            for (int i = 0; i < 40; i++)
            {
                // Posted from the released call itself, just before it returns: the return, which usually wins the race
                // with the idle carrier's wake, drains the inbox and runs the callback on this thread.
                Green.RunBlocking(() =>
                {
                    Thread.Sleep(1);
                    hub.Post(() =>
                    {
                        callbacks++;
                        if (SynchronizationContext.Current == marker) sawContext++;
                        if (Marker.Value != null) sawLocal++;
                    });
                });
                Assert.That(SynchronizationContext.Current, Is.SameAs(marker), "the greenlet's own context is put back");
            }
            SynchronizationContext.SetSynchronizationContext(null);
        });
        g.Join();
        Assert.Multiple(() =>
        {
            Assert.That(g.Successful, Is.True, () => g.Exception?.ToString() ?? "");
            Assert.That(callbacks, Is.EqualTo(40));
            Assert.That(Hub.IdleBatonTakeovers, Is.GreaterThan(0), "returns that took the idle hub's baton");
            Assert.That(sawContext, Is.Zero, "callbacks that ran under the greenlet's synchronization context");
            Assert.That(sawLocal, Is.Zero, "callbacks that saw the greenlet's AsyncLocal");
        });
    }
}
