using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.LowLevel;

/// <summary>The examples of docs/lowlevel.md, verbatim, and what they promise.</summary>
public class LowLevelExampleTests : HubTest
{
    /// <summary>Greenlets of one hub wait until Set is called, from one of them or from any other thread.</summary>
    private sealed class Signal(Hub hub)
    {
        // Hub-only state: greenlets of one hub never race, so no lock is needed (and none may be taken
        // between BeginPark and EndPark: that window must not block).
        private readonly List<ParkToken> _waiters = new();
        private bool _set;

        /// <summary>Parks the calling greenlet until Set; false if the timeout elapsed first.</summary>
        public bool Wait(TimeSpan? timeout = null)
        {
            if (_set) return true;
            // foreignWake: Set may come from another thread, so while nothing else runs the hub must wait for it
            // instead of reporting a deadlock (LoopExit). A pending kill is thrown here instead of parking.
            var token = Parking.BeginPark(WaitReason.Event, foreignWake: true);
            _waiters.Add(token);
            try
            {
                return Parking.EndPark(token, timeout) != Parking.TimedOut;
            }
            finally
            {
                _waiters.Remove(token);                        // woken, timed out or killed: no longer waiting
            }
        }

        /// <summary>Wakes every waiter. Any thread: a foreign thread hands the work to the hub.</summary>
        public void Set()
        {
            if (Parking.CurrentHub != hub)
            {
                hub.Post(Set);                                 // runs on the hub, as a callback (which must not block)
                return;
            }
            _set = true;
            foreach (var token in _waiters.ToArray()) token.TryWake();
        }
    }

    /// <summary>The callback-based API of the second example.</summary>
    public interface ICallbackReader
    {
        void BeginRead(byte[] buffer, Action<int, Exception?> done);
    }

    private sealed class PoolReader(Exception? error = null) : ICallbackReader
    {
        public void BeginRead(byte[] buffer, Action<int, Exception?> done) =>
            ThreadPool.QueueUserWorkItem(_ => { Thread.Sleep(10); buffer[0] = 42; done(1, error); });
    }

    /// <summary>Blocks the calling greenlet (only) until the callback-based API completes.</summary>
    private static int ReadBlocking(ICallbackReader reader, byte[] buffer) =>
        (int)Parking.Park(WaitReason.Other, token =>
            reader.BeginRead(buffer, (count, error) =>         // any thread, some time later
            {
                if (error is null) token.PostWake(count);
                else token.PostWakeWithError(error);
            }), foreignWake: true)!;

    [Test]
    public void WaitersParkUntilSetFromAnotherThread()
    {
        var signal = new Signal(Hub);
        var order = new List<string>();
        var waiters = Enumerable.Range(0, 3).Select(i => Green.Spawn(() => { signal.Wait(); order.Add($"woken {i}"); })).ToList();
        Green.Spawn(() => order.Add("others run"));
        Green.Sleep(10);
        Assert.That(order, Is.EqualTo(new[] { "others run" }));
        Green.Wait(Task.Run(signal.Set));
        Green.JoinAll(waiters, TimeSpan.FromSeconds(10));
        Assert.That(order, Is.EqualTo(new[] { "others run", "woken 0", "woken 1", "woken 2" }));
        Assert.That(signal.Wait(TimeSpan.Zero), Is.True, "already set: no wait");
    }

    [Test]
    public void AWaitTimesOutAndAKilledWaiterLeavesNoTrouble()
    {
        var signal = new Signal(Hub);
        Assert.That(signal.Wait(TimeSpan.FromMilliseconds(10)), Is.False);
        var killed = Green.Spawn(() => signal.Wait());
        Green.Sleep(0);
        killed.Kill();
        var waiter = Green.Spawn(() => signal.Wait(TimeSpan.FromSeconds(10)));
        Green.Sleep(0);
        signal.Set();
        Assert.That(waiter.Get(TimeSpan.FromSeconds(10)), Is.True);
    }

    [Test]
    public void AForeignSetWakesAHubWithNothingElseToRun()
    {
        var signal = new Signal(Hub);
        ThreadPool.QueueUserWorkItem(_ => { Thread.Sleep(20); signal.Set(); });
        Assert.That(signal.Wait(), Is.True, "no LoopExit: the park waits for a wake from outside");
    }

    [Test]
    public void ACallbackApiBlocksOnlyTheCallingGreenlet()
    {
        var buffer = new byte[1];
        bool otherRan = false;
        Green.Spawn(() => otherRan = true);
        Assert.That(ReadBlocking(new PoolReader(), buffer), Is.EqualTo(1));
        Assert.That((buffer[0], otherRan), Is.EqualTo(((byte)42, true)));
        Assert.That(() => ReadBlocking(new PoolReader(new IOException("the device's")), buffer),
            Throws.TypeOf<IOException>().With.Message.EqualTo("the device's"));
    }
}
