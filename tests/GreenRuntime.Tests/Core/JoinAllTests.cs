namespace GreenRuntime.Tests.Core;

/// <summary>gevent's test__joinall.py: raise_error, count, timeout.</summary>
public class JoinAllTests : HubTest
{
    [Test]
    public void ReturnsAllInCompletionOrder()
    {
        var slow = Green.Spawn(() => Green.Sleep(30));
        var fast = Green.Spawn(() => Green.Sleep(1));
        var done = Green.JoinAll([slow, fast]);
        Assert.That(done, Is.EqualTo(new[] { fast, slow }));
    }

    [Test]
    public void RaiseErrorRethrowsTheEarliestFailureInTimeNotInTheList()
    {
        // The late failure is ordered by an event, not by a longer sleep: on a loaded machine both sleeps could
        // expire in the same scheduler pass and the late greenlet could fail before JoinAll's caller resumed.
        var release = new Event();
        var late = Green.Spawn(() => { release.Wait(); throw new InvalidOperationException("late"); });
        var early = Green.Spawn(() => { Green.Sleep(5); throw new ArgumentException("early"); });
        var ex = Assert.Throws<ArgumentException>(() => Green.JoinAll([late, early], raiseError: true));
        Assert.That(ex!.Message, Is.EqualTo("early"), "the first failure in time, although 'late' comes first in the list");
        Assert.That(late.Dead, Is.False, "raiseError returns as soon as the first failure is seen");
        release.Set();
        late.Join();
        Assert.That(late.Exception, Is.InstanceOf<InvalidOperationException>(), "the later failure happened after JoinAll returned");
    }

    [Test]
    public void RaiseErrorWithAlreadyFailedGreenletsPicksTheFirstToFail()
    {
        var a = Green.Spawn(() => { Green.Sleep(20); throw new InvalidOperationException("second"); });
        var b = Green.Spawn(() => { Green.Sleep(5); throw new ArgumentException("first"); });
        Green.JoinAll([a, b]);
        var ex = Assert.Throws<ArgumentException>(() => Green.JoinAll([a, b], raiseError: true));
        Assert.That(ex!.Message, Is.EqualTo("first"));
    }

    [Test]
    public void WithoutRaiseErrorFailuresAreReturned()
    {
        var a = Green.Spawn(() => throw new Exception());
        var done = Green.JoinAll([a]);
        Assert.That(done, Is.EqualTo(new[] { a }));
        Assert.That(a.Successful, Is.False);
    }

    [Test]
    public void CountReturnsAsSoonAsThatManyFinished()
    {
        var gs = Enumerable.Range(0, 5).Select(i => Green.Spawn(() => Green.Sleep(i == 0 ? 1 : 2000))).ToList();
        var done = Green.JoinAll(gs, count: 1);
        Assert.That(done, Is.EqualTo(new[] { gs[0] }));
        Green.KillAll(gs);
    }

    [Test]
    public void TimeoutReturnsTheFinishedOnes()
    {
        var quick = Green.Spawn(() => { });
        var slow = Green.Spawn(() => Green.Sleep(30_000));
        // Long enough for the quick one's start on a busy machine (a new carrier thread must run), far shorter than the slow one.
        var done = Green.JoinAll([quick, slow], timeout: TimeSpan.FromMilliseconds(500));
        Assert.That(done, Is.EqualTo(new[] { quick }));
        slow.Kill();
    }

    [Test]
    public void EmptyListReturnsAtOnce() => Assert.That(Green.JoinAll([]), Is.Empty);

    [Test]
    public void RepeatedGreenletsAreReturnedOnce()
    {
        var a = Green.Spawn(() => Green.Sleep(5));
        var b = Green.Spawn(() => { });
        var done = Green.JoinAll([a, b, a, b, a]);
        Assert.That(done, Is.EqualTo(new[] { b, a }));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void LargeListsWithRepeatsReturnEachOnceInFinishingOrder(bool countKnown)
    {
        // The first third finishes at once; the rest in reverse spawn order (greenlet i yields 60 - i times, and
        // yields go round robin), so the order does not depend on timing.
        var gs = Enumerable.Range(0, 60).Select(i => Green.Spawn(() =>
        {
            for (int k = 0; k < (i < 20 ? 0 : 60 - i); k++) Green.Sleep(0);
        })).ToList();
        Green.JoinAll(gs.Take(20));
        var listed = gs.Concat(gs).Concat(gs.AsEnumerable().Reverse());
        var done = Green.JoinAll(countKnown ? listed.ToArray() : listed.Where(_ => true));
        Assert.That(done.Take(20), Is.EqualTo(gs.Take(20)), "those finished before come first, in finishing order");
        Assert.That(done.Skip(20), Is.EqualTo(gs.Skip(20).Reverse()));
    }

    [Test]
    public void CountCountsDistinctGreenlets()
    {
        var a = Green.Spawn(() => { });
        var slow = Green.Spawn(() => Green.Sleep(5000));
        var done = Green.JoinAll(Enumerable.Repeat(a, 30).Append(slow), count: 2, timeout: TimeSpan.FromMilliseconds(50));
        Assert.That(done, Is.EqualTo(new[] { a }), "a listed 30 times is one greenlet: the join waits for slow and times out");
        slow.Kill();
    }

    [Test]
    public void BadArgumentsAreRefused()
    {
        Assert.Throws<ArgumentNullException>(() => Green.JoinAll(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => Green.JoinAll([], timeout: TimeSpan.FromSeconds(-1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Green.JoinAll([], count: -1));
    }
}
