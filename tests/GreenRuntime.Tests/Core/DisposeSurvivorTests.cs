using System.Net.Sockets;
using GreenRuntime.Io;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.Core;

/// <summary>
/// Greenlets that are still unwinding when <see cref="Hub.Dispose()"/>'s grace ends (shielded, or in a call that is not
/// cooperative) finish their work afterwards, as threads would: what they hold is released, not held for ever.
/// Each hub runs on a thread of its own, disposed with a short grace.
/// </summary>
[TestFixture]
public class DisposeSurvivorTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="body"/> on a new thread with a hub of its own, then disposes the hub with
    /// <see cref="Grace"/>; returns once Dispose has returned, with the hub.</summary>
    private static Hub RunAndDispose(Action<Hub> body)
    {
        Hub? hub = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                hub = new Hub();
                body(hub);
                hub.Dispose(Grace);
                Assert.That(Hub.CurrentOrNull, Is.Null, "Dispose unbinds the hub from its thread, survivors or not");
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        Assert.That(thread.Join(Bound), Is.True, "Dispose returns after its grace, whatever the survivors do");
        if (failure != null) throw new AssertionException($"The hub's thread failed: {failure}");
        Assert.That(hub!.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => hub.Post(() => { }));
        return hub;
    }

    [Test]
    public void AShieldedLockHolderFinishesAfterDisposeAndReleasesTheLock()
    {
        var gate = new object();
        var entered = new ManualResetEventSlim();
        bool bodyDone = false, afterShieldRan = false;
        Greenlet? survivor = null;
        RunAndDispose(_ =>
        {
            survivor = Green.Spawn(() =>
            {
                lock (gate)
                {
                    using (Green.Shield())
                    {
                        entered.Set();
                        Green.Sleep(1500); // outlasts the grace: the kill is held back meanwhile
                    }
                    bodyDone = true;
                }
                Green.Sleep(1); // the first blocking point outside the shield raises the pending kill
                afterShieldRan = true;
            });
            Green.Sleep(50);
            Assert.That(entered.IsSet, Is.True);
        });
        // A plain thread gets the lock once the survivor has done its work, as with a thread holding it.
        Assert.That(Monitor.TryEnter(gate, Bound), Is.True, "the lock of a greenlet that outlived Dispose is released when it finishes");
        Monitor.Exit(gate);
        Assert.That(survivor!.Join(Bound), Is.True);
        Assert.That(bodyDone, Is.True, "its shielded work ran to its end");
        Assert.That(afterShieldRan, Is.False, "its kill stayed pending and ended it at the next blocking point");
    }

    [Test]
    public void ASurvivorCanStartNothingNew()
    {
        var release = new ManualResetEventSlim();
        Exception? spawnFailure = null;
        Greenlet? survivor = null;
        RunAndDispose(_ =>
        {
            survivor = Green.Spawn(() =>
            {
                using (Green.Shield())
                {
                    while (!release.IsSet) Green.Sleep(10);
                    try
                    {
                        Green.Spawn(() => { });
                    }
                    catch (Exception e)
                    {
                        spawnFailure = e;
                    }
                }
            });
            Green.Sleep(20);
        });
        release.Set();
        Assert.That(survivor!.Join(Bound), Is.True, "a plain thread joins a greenlet that outlived Dispose");
        Assert.That(spawnFailure, Is.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void ASurvivorWaitingOnTheReactorGetsItsData()
    {
        if (!Epoll.IsSupported) Assert.Ignore("The reactor exists on Linux x64 only.");
        var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        using var _a = a;
        using var _b = b;
        var received = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        RunAndDispose(_ =>
        {
            Assert.That(CooperativeSocket.HasReactor, Is.True);
            Green.Spawn(() =>
            {
                using (Green.Shield())
                {
                    var buffer = new byte[4];
                    int n = CooperativeSocket.Receive(b, buffer, SocketFlags.None, null, out var error);
                    received.SetResult(error == SocketError.Success ? n : -1);
                }
            });
            Green.Sleep(20);
        });
        Assert.That(received.Task.IsCompleted, Is.False, "still waiting after Dispose returned");
        a.Send([1, 2, 3]);
        Assert.That(received.Task.Wait(Bound), Is.True, "the disposed hub's reactor still serves the greenlet that outlived Dispose");
        Assert.That(received.Task.Result, Is.EqualTo(3));
    }
}
