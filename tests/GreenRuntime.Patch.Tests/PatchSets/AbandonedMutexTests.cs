extern alias PatchAssembly;

using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A <see cref="Mutex"/> that a greenlet's body still holds when it ends is abandoned as when a thread that holds one
/// exits: every other waiter (a thread, another greenlet, another handle of a named mutex, as another process has) gets
/// <see cref="AbandonedMutexException"/> with the ownership, and no later greenlet inherits it from the pooled thread the
/// body ran on. Each scenario runs on plain threads too, where the runtime's own thread exit is the reference.
/// </summary>
public class AbandonedMutexTests : PatchedHubTest
{
    // The abandonment comes when the thread has ended, a moment after the body: generous, as the wait ends the moment it
    // comes (without the abandonment the wait times out).
    private const int AbandonBoundMs = 5_000;

    public enum Ending { Returns, Throws, Killed }

    private static Mutex NewMutex(bool named, out string? name)
    {
        name = named ? "greenruntime-test-" + Guid.NewGuid().ToString("N") : null;
        return new Mutex(false, name);
    }

    /// <summary>What a plain thread's <c>WaitOne</c> with <paramref name="timeoutMs"/> reports: "acquired", "abandoned" or
    /// "timed out". It releases what it acquired.</summary>
    private static string WaitOnAThread(Mutex mutex, int timeoutMs)
    {
        string result = "";
        var thread = new Thread(() => result = WaitAndRelease(mutex, timeoutMs));
        thread.Start();
        thread.Join(); // cooperative on a greenlet
        return result;
    }

    private static string WaitAndRelease(Mutex mutex, int timeoutMs)
    {
        try
        {
            if (!mutex.WaitOne(timeoutMs)) return "timed out";
            mutex.ReleaseMutex();
            return "acquired";
        }
        catch (AbandonedMutexException)
        {
            mutex.ReleaseMutex(); // the waiter owns an abandoned mutex
            return "abandoned";
        }
    }

    private static void AcquireAndEnd(Mutex mutex, Ending ending)
    {
        mutex.WaitOne();
        if (ending == Ending.Throws) throw new InvalidOperationException("the body fails holding the mutex");
        if (ending == Ending.Killed) Thread.Sleep(Timeout.Infinite);
    }

    [TestCase(false, Ending.Returns)]
    [TestCase(false, Ending.Throws)]
    [TestCase(false, Ending.Killed)]
    [TestCase(true, Ending.Returns)]
    [TestCase(true, Ending.Throws)]
    [TestCase(true, Ending.Killed)]
    public void AMutexAGreenletEndsHoldingIsAbandonedForAThreadThatWaits(bool named, Ending ending)
    {
        using var mutex = NewMutex(named, out _);
        var holder = Green.Spawn(() => AcquireAndEnd(mutex, ending));
        if (ending == Ending.Killed)
        {
            Green.Sleep(50);
            holder.Kill(timeout: TimeSpan.FromSeconds(5));
        }
        holder.Join(TimeSpan.FromSeconds(5));
        Assert.That(holder.Dead, Is.True);
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
    }

    [TestCase(false, Ending.Returns)]
    [TestCase(false, Ending.Throws)]
    [TestCase(true, Ending.Returns)]
    [TestCase(true, Ending.Throws)]
    public void OnThreadsAMutexAThreadEndsHoldingIsAbandonedForAThreadThatWaits(bool named, Ending ending)
    {
        using var mutex = NewMutex(named, out _);
        var holder = new Thread(() =>
        {
            try
            {
                AcquireAndEnd(mutex, ending);
            }
            catch (InvalidOperationException)
            {
                // the thread's body failed; the thread ends
            }
        });
        holder.Start();
        holder.Join();
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void TheNextGreenletDoesNotInheritAMutexAnEndedGreenletHeld(bool named)
    {
        // The carrier the first body ran on goes back to the pool and is the first rented again: the second greenlet's
        // wait acquired the mutex recursively there, as its owner, and so did every greenlet after it.
        using var mutex = NewMutex(named, out _);
        var first = Green.Spawn(() => { mutex.WaitOne(); });
        first.Join();
        string second = "";
        var next = Green.Spawn(() => second = WaitAndRelease(mutex, AbandonBoundMs));
        next.Join(TimeSpan.FromSeconds(10));
        Assert.That(second, Is.EqualTo("abandoned"));
        Assert.That(WaitOnAThread(mutex, 0), Is.EqualTo("acquired"), "the mutex is free once its new owner released it");
    }

    [Test]
    public void AGreenletWaitingForAMutexAnotherGreenletEndsHoldingGetsItAbandoned()
    {
        using var mutex = NewMutex(named: false, out _);
        Assert.That(WhatAWaiterGetsWhenAHolderEnds(mutex, () => mutex.WaitOne()), Is.EqualTo("abandoned"));
    }

    /// <summary>A greenlet runs <paramref name="take"/> and ends 50 ms later; what another greenlet, waiting for the mutex
    /// meanwhile, gets.</summary>
    private static string WhatAWaiterGetsWhenAHolderEnds(Mutex mutex, Action take)
    {
        var holder = Green.Spawn(() =>
        {
            take();
            Green.Sleep(50); // the waiter waits meanwhile
        });
        string waited = "";
        var waiter = Green.Spawn(() =>
        {
            Green.Sleep(10);
            waited = WaitAndRelease(mutex, AbandonBoundMs);
        });
        Green.JoinAll([holder, waiter], TimeSpan.FromSeconds(10));
        return waited;
    }

    [Test]
    public void AnotherHandleOfANamedMutexSeesItAbandonedAsAnotherProcessWould()
    {
        using var mutex = NewMutex(named: true, out var name);
        Green.Spawn(() => { mutex.WaitOne(); }).Join();
        using var other = Mutex.OpenExisting(name!); // a handle of its own, as another process opens the mutex
        Assert.That(WaitOnAThread(other, AbandonBoundMs), Is.EqualTo("abandoned"));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void AMutexAGreenletTookInAWaitAnyOrWaitAllIsAbandonedToo(bool waitAll)
    {
        using var mutex = NewMutex(named: false, out _);
        using var signalled = new ManualResetEvent(true);
        Green.Spawn(() =>
        {
            if (waitAll) WaitHandle.WaitAll([signalled, mutex]);
            else WaitHandle.WaitAny([mutex, signalled]);
        }).Join();
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
    }

    [Test]
    public void AGreenletThatReleasedItsMutexLeavesItFree()
    {
        using var mutex = NewMutex(named: false, out _);
        Green.Spawn(() =>
        {
            mutex.WaitOne();
            mutex.ReleaseMutex();
        }).Join();
        Assert.That(WaitOnAThread(mutex, 0), Is.EqualTo("acquired"));
        string next = "";
        Green.Spawn(() => next = WaitAndRelease(mutex, 0)).Join();
        Assert.That(next, Is.EqualTo("acquired"));
    }

    [Test]
    public void ACarrierThatEndsIsReplacedWithoutChangingWhatTheHubHolds()
    {
        // Each of these bodies keeps the mutex (abandoned by the one before), so each carrier ends and the hub takes a
        // fresh one in its place: none is counted twice or lost against the hub's carrier cap.
        using var mutex = NewMutex(named: false, out _);
        int before = HubUnderTest.GetRunInfo().Carriers.HeldByThisHub;
        var threads = new List<Thread>();
        void TakeAndKeep()
        {
            try
            {
                mutex.WaitOne();
            }
            catch (AbandonedMutexException)
            {
                // acquired: the body before ended holding it
            }
            lock (threads) threads.Add(Thread.CurrentThread);
            Green.Sleep(1);
        }
        for (int i = 0; i < 30; i++)
        {
            var g = Green.Spawn(TakeAndKeep);
            g.Join(TimeSpan.FromSeconds(10));
            Assert.That(g.Successful, Is.True);
        }
        var concurrent = Enumerable.Range(0, 20).Select(_ => Green.Spawn(TakeAndKeep)).ToList();
        Green.JoinAll(concurrent, TimeSpan.FromSeconds(20), raiseError: true);
        Assert.That(concurrent.All(g => g.Successful), Is.True);
        Assert.That(threads.Distinct().Count(), Is.EqualTo(50), "every body that kept the mutex ended its carrier");
        Assert.That(HubUnderTest.GetRunInfo().Carriers.HeldByThisHub, Is.EqualTo(before));
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
    }

    [Test]
    public void BodiesThatReleasedTheirMutexKeepTheirCarrierWhileOneThatKeepsItStillAbandonsIt()
    {
        // A library that guards a shared file with a mutex on every write takes and releases it in nearly every body:
        // such bodies must not cost a thread each. Each body below acquires and releases 28 times, through every
        // patched wait that acquires (WaitOne overloads, WaitAny, WaitAll, recursively), and records its thread.
        using var mutex = NewMutex(named: false, out _); // WaitAny and WaitAll refuse named ones on Linux
        using var named = NewMutex(named: true, out _);
        using var signalled = new ManualResetEvent(true);
        var threads = new List<Thread>();
        for (int i = 0; i < 50; i++)
        {
            var g = Green.Spawn(() =>
            {
                for (int j = 0; j < 4; j++)
                {
                    mutex.WaitOne();
                    mutex.ReleaseMutex();
                    named.WaitOne();
                    Assert.That(named.WaitOne(0), Is.True);
                    named.ReleaseMutex();
                    named.ReleaseMutex();
                    Assert.That(mutex.WaitOne(1000), Is.True);
                    Assert.That(mutex.WaitOne(TimeSpan.FromSeconds(1)), Is.True); // recursive: owned twice
                    mutex.ReleaseMutex();
                    mutex.ReleaseMutex();
                    Assert.That(WaitHandle.WaitAny([mutex, signalled]), Is.EqualTo(0));
                    mutex.ReleaseMutex();
                    Assert.That(WaitHandle.WaitAll([signalled, mutex], 1000), Is.True);
                    mutex.ReleaseMutex();
                    Green.Sleep(0);
                }
                lock (threads) threads.Add(Thread.CurrentThread);
            });
            g.Join(TimeSpan.FromSeconds(10));
            Assert.That(g.Successful, Is.True, () => g.Exception?.ToString() ?? "");
        }
        var distinct = threads.Distinct().ToList();
        Assert.That(distinct, Has.Count.LessThan(25), "bodies that released their mutex ran on fresh threads: their carriers were retired (a thread each)");
        Assert.That(distinct.All(t => t.IsAlive), Is.True, "a carrier that only ran bodies that released their mutex ended");
        Assert.That(Patching.Applied.Select(p => p.Method), Has.Member(typeof(Mutex).GetMethod(nameof(Mutex.ReleaseMutex))),
            "with the release patched, only a body that still holds a mutex ends its carrier");
        Assert.That(WaitOnAThread(mutex, 0), Is.EqualTo("acquired"));
        Assert.That(WaitOnAThread(named, 0), Is.EqualTo("acquired"));

        // Recursively owned twice and released once, it is still held when the body ends: abandoned.
        Green.Spawn(() =>
        {
            mutex.WaitOne();
            mutex.WaitOne();
            mutex.ReleaseMutex();
        }).Join();
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
        Assert.That(WhatAWaiterGetsWhenAHolderEnds(mutex, () =>
        {
            mutex.WaitOne();
            mutex.ReleaseMutex();
            mutex.WaitOne(); // kept
        }), Is.EqualTo("abandoned"));
    }

    [Test]
    public void OnThreadsAThreadThatReleasedItsMutexLeavesItFreeAndOneThatKeepsItAbandonsIt()
    {
        using var mutex = NewMutex(named: true, out _);
        var t = new Thread(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                mutex.WaitOne();
                mutex.ReleaseMutex();
            }
        });
        t.Start();
        t.Join();
        Assert.That(WaitOnAThread(mutex, 0), Is.EqualTo("acquired"));
        t = new Thread(() =>
        {
            mutex.WaitOne();
            mutex.WaitOne();
            mutex.ReleaseMutex();
        });
        t.Start();
        t.Join();
        Assert.That(WaitOnAThread(mutex, AbandonBoundMs), Is.EqualTo("abandoned"));
    }
}
