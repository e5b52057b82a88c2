namespace GreenRuntime.Tests.Core;

/// <summary>Invariant 1: at most one carrier of a hub runs at any instant.</summary>
public class BatonTests : HubTest
{
    [Test]
    public void AtMostOneGreenletRunsAtAnyInstantOver100kSwitches()
    {
        int running = 0, maxRunning = 0;
        void Body()
        {
            for (int i = 0; i < 25_000; i++)
            {
                var now = Interlocked.Increment(ref running);
                if (now > maxRunning) maxRunning = now;
                Thread.SpinWait(5);
                Interlocked.Decrement(ref running);
                Green.Sleep(0);
            }
        }
        Green.JoinAll(Enumerable.Range(0, 4).Select(_ => Green.Spawn(Body)).ToList());
        Assert.That(maxRunning, Is.EqualTo(1));
    }

    [Test]
    public void NonAtomicIncrementsFromAThousandGreenletsAreExact()
    {
        int shared = 0;
        void Body()
        {
            for (int i = 0; i < 100; i++)
            {
                var read = shared;
                Thread.SpinWait(20);
                shared = read + 1;
                if (i % 10 == 0) Green.Sleep(0);
            }
        }
        Green.JoinAll(Enumerable.Range(0, 1000).Select(_ => Green.Spawn(Body)).ToList());
        Assert.That(shared, Is.EqualTo(100_000));
    }

    [Test]
    public void GreenletsRunOnSeveralCarrierThreadsButNeverTogether()
    {
        var threads = new HashSet<int>();
        var gs = Enumerable.Range(0, 10).Select(_ => Green.Spawn(() =>
        {
            for (int i = 0; i < 10; i++) { threads.Add(Environment.CurrentManagedThreadId); Green.Sleep(0); }
        })).ToList();
        Green.JoinAll(gs);
        Assert.That(threads.Count, Is.GreaterThan(1), "suspended stackful greenlets each keep a carrier");
    }
}
