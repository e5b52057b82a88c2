using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.Cooperative;

/// <summary>The pauses of the polled waits: 1 ms doubling to 20 ms, never longer than the time left.</summary>
public class PollBackoffTests
{
    [Test]
    public void PausesDoubleFromOneMillisecondAndStopAtTwenty()
    {
        var backoff = new PollBackoff();
        var pauses = new List<double>();
        for (int i = 0; i < 8; i++)
        {
            pauses.Add(backoff.Next(TimeSpan.MaxValue).TotalMilliseconds);
            backoff.Grow();
        }
        Assert.That(pauses, Is.EqualTo(new double[] { 1, 2, 4, 8, 16, 20, 20, 20 }));
    }

    [Test]
    public void APauseNeverOutlastsTheTimeLeft()
    {
        var backoff = new PollBackoff();
        for (int i = 0; i < 6; i++) backoff.Grow();
        Assert.That(backoff.Next(TimeSpan.FromMilliseconds(3)), Is.EqualTo(TimeSpan.FromMilliseconds(3)));
        Assert.That(backoff.Next(TimeSpan.Zero), Is.EqualTo(TimeSpan.Zero));
    }
}
