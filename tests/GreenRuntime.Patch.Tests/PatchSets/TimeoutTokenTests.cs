using System.Threading.Channels;
using System.Threading.Tasks.Dataflow;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// <see cref="GreenTimeout.Token"/> handed to an operation, as docs/patching.md advises: the token's callbacks must not
/// run on the hub (they may wait for a lock a parked greenlet holds), and a wait the timeout ends must not lose what the
/// operation did meanwhile (an item read from, or written to, a channel).
/// </summary>
public class TimeoutTokenTests : PatchedHubTest
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Test]
    public void ATokenCallbackThatWaitsForALockAParkedGreenletHoldsDoesNotStopTheHub()
    {
        // The timeout wakes its greenlet from a park: the callback runs there, as a cooperative lock wait.
        bool callbackRan = false;
        OwnHub.Run(() =>
        {
            var gate = new object();
            var holder = Green.Spawn(() =>
            {
                lock (gate) Green.Sleep(200);
            });
            var waiter = Green.Spawn(() =>
            {
                using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
                timeout.Token.Register(() =>
                {
                    lock (gate) callbackRan = true;
                });
                Assert.Throws<GreenTimeoutException>(() => Green.Sleep(5000));
            });
            Green.JoinAll([holder, waiter], raiseError: true);
        }, Bound, "the token's callback waited for the lock on the hub, whose holder then never ran to release it");
        Assert.That(callbackRan, Is.True);
    }

    [Test]
    public void ATokenCallbackOfAStacklessGreenletThatWaitsForALockAParkedGreenletHoldsDoesNotStopTheHub()
    {
        // Nothing parks in the runtime for the timeout to wake: the runtime's cancelling thread runs the callback.
        bool callbackRan = false;
        OwnHub.Run(() =>
        {
            var gate = new object();
            var holder = Green.Spawn(() =>
            {
                lock (gate) Green.Sleep(200);
            });
            var waiter = Green.SpawnAsync(async () =>
            {
                var called = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
                timeout.Token.Register(() =>
                {
                    lock (gate) callbackRan = true;
                    called.SetResult();
                });
                await called.Task;
            });
            Green.JoinAll([holder, waiter], raiseError: true);
        }, Bound, "the token's callback waited for the lock on the hub, whose holder then never ran to release it");
        Assert.That(callbackRan, Is.True);
    }

    [Test]
    public void ABoundedChannelReadAndWrittenUnderShortTimeoutsGivenTheTokenLosesNothing()
    {
        // A wait the timeout ended used to raise it although the channel had completed the operation (the task that
        // carries its result completes a moment later, on the thread pool): the item read was dropped, and a write the
        // caller was told had timed out was delivered. A thread with a CancellationTokenSource(ms) gets the result.
        var channel = Channel.CreateBounded<int>(new BoundedChannelOptions(2) { FullMode = BoundedChannelFullMode.Wait });
        AssertNothingLost(
            (x, token) => channel.Writer.WriteAsync(x, token).AsTask().Wait(),
            token => channel.Reader.ReadAsync(token).AsTask().Result,
            (out int x) => channel.Reader.TryRead(out x));
    }

    [Test]
    public void ADataflowBufferReceivedFromUnderShortTimeoutsGivenTheTokenLosesNothing()
    {
        var buffer = new BufferBlock<int>();
        AssertNothingLost(
            (x, _) => Assert.That(buffer.Post(x), Is.True),
            token => buffer.Receive(token),
            (out int x) => buffer.TryReceive(out x));
    }

    private delegate bool TryTake(out int item);

    /// <summary>Whether <paramref name="e"/> is the timeout, or the cancellation of its token that the operation reports
    /// itself once the wait has let it end, as on a thread (Dataflow's <c>Receive</c> checks its token after the wait).</summary>
    private static bool EndedBy(GreenTimeout timeout, Exception e) =>
        e is GreenTimeoutException || (e is OperationCanceledException && timeout.Expired);

    /// <summary>Writers and readers, each call under a 1–5 ms timeout whose token it is given: every item a writer was told
    /// it wrote is read exactly once, and none it was told timed out is.</summary>
    private static void AssertNothingLost(Action<int, CancellationToken> write, Func<CancellationToken, int> read, TryTake drain)
    {
        const int Items = 2000, Writers = 4, Readers = 6;
        var written = new List<int>();
        var taken = new List<int>(); // greenlets of one hub: no lock needed
        int next = 0, timeouts = 0, writersLeft = Writers;
        var writers = Enumerable.Range(0, Writers).Select(w => Green.Spawn(() =>
        {
            var random = new Random(w);
            while (next < Items)
            {
                int x = next++;
                using (var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(random.Next(1, 6))))
                {
                    try
                    {
                        write(x, timeout.Token);
                        written.Add(x);
                    }
                    catch (Exception e) when (EndedBy(timeout, e))
                    {
                        timeouts++;
                    }
                }
                if (x % 4 == 0) Green.Sleep(1); // let the timeouts of readers that wait for an item expire too
            }
            writersLeft--;
        })).ToList();
        var readers = Enumerable.Range(0, Readers).Select(r => Green.Spawn(() =>
        {
            var random = new Random(100 + r);
            while (writersLeft > 0)
            {
                using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(random.Next(1, 6)));
                try
                {
                    taken.Add(read(timeout.Token));
                }
                catch (Exception e) when (EndedBy(timeout, e))
                {
                    timeouts++;
                }
            }
        })).ToList();
        Green.JoinAll([.. writers, .. readers], raiseError: true);
        while (drain(out var left)) taken.Add(left);

        Assert.That(timeouts, Is.GreaterThan(0), "the timeouts expired in the middle of operations");
        Assert.That(taken, Is.Unique);
        Assert.That(taken.Order(), Is.EqualTo(written.Order()),
            $"{written.Except(taken).Count()} written and never read, {taken.Except(written).Count()} read but their writer saw a timeout");
    }
}
