using GreenRuntime.Scheduling;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>A resume that outlived its park is a bug of the runtime; a release build must survive it.</summary>
public class StaleResumeTests : HubTest
{
    [TestCase(true)]
    [TestCase(false)]
    public void AResumeOfAGreenletThatIsNotParkedIsDroppedAndLoggedAndTheHubGoesOn(bool onAFreeCarrier)
    {
        var ended = Green.Spawn(() => 1, "ended");
        ended.Join();
        var running = Green.Spawn(() => { Green.Sleep(30); return 2; }, "sleeping");
        Green.Sleep(5);
        Hub.DropStaleResumesForTesting = true;
        try
        {
            // A dead greenlet (no carrier) and a parked one whose park this resume is not for (its own wake is its timer).
            Hub.EnqueueForTesting(RunItem.ForResume(ended));
            if (onAFreeCarrier)
            {
                // Taken by the free carrier that runs the hub while main waits (the crash seen: Schedule on a pooled
                // carrier's thread, where the exception ended the process).
                var other = Green.Spawn(() => Green.Sleep(1));
                other.Join();
            }
            else
            {
                Green.Sleep(0); // taken by main's own thread as it yields
            }
            Assert.That(running.Get(), Is.EqualTo(2), "the hub went on");
            Assert.That(Green.Spawn(() => 3).Get(), Is.EqualTo(3));
        }
        finally
        {
            Hub.DropStaleResumesForTesting = false;
        }
        var dropped = Logs.Entries.Where(e => e.EventId.Id == 18).ToList();
        Assert.That(dropped, Has.Count.EqualTo(1));
        Assert.That(dropped[0].Level, Is.EqualTo(LogLevel.Critical));
        Assert.That(dropped[0].Message, Does.Contain("<Greenlet ended#").And.Contain("Dead").And.Contain("no carrier"));
    }
}
