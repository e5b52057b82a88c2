using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.Core;

/// <summary>
/// A greenlet runs under the ExecutionContext captured when it was created, like Thread.Start and Task.Run, and
/// nothing it changes is visible to its spawner, its siblings or the next greenlet on the same carrier thread.
/// </summary>
public class AmbientContextTests : HubTest
{
    private static readonly AsyncLocal<string?> s_local = new();

    [Test]
    public void SpawnerValueFlowsIntoStackfulAndStacklessChildren()
    {
        s_local.Value = "parent";
        string? stackful = "unset", stackless = "unset", later = "unset", created = "unset";
        var a = Green.Spawn(() => { stackful = s_local.Value; });
        var b = Green.SpawnAsync(async () => { await Task.Yield(); stackless = s_local.Value; });
        var c = Green.SpawnLater(TimeSpan.FromMilliseconds(5), () => { later = s_local.Value; });
        var d = new Greenlet(() => { created = s_local.Value; });
        s_local.Value = "changed after the spawns";
        d.Start();
        Green.JoinAll([a, b, c, d]);
        Assert.Multiple(() =>
        {
            Assert.That(stackful, Is.EqualTo("parent"));
            Assert.That(stackless, Is.EqualTo("parent"));
            Assert.That(later, Is.EqualTo("parent"));
            Assert.That(created, Is.EqualTo("parent"), "new Greenlet captures at creation, not at Start");
        });
        s_local.Value = null;
    }

    [Test]
    public void ChangesInsideAGreenletDoNotLeakToTheSpawner()
    {
        s_local.Value = "parent";
        Green.Spawn(() => { s_local.Value = "child"; Green.Sleep(1); s_local.Value = "child2"; }).Join();
        Green.SpawnAsync(async () => { s_local.Value = "async child"; await Task.Yield(); }).Join();
        Assert.That(s_local.Value, Is.EqualTo("parent"));
        s_local.Value = null;
    }

    [Test]
    public void AThousandSequentialGreenletsOnReusedCarriersNeverSeeAnothersValue()
    {
        // Sequential: each greenlet finishes before the next starts, so they all run on the same free carrier.
        var carriers = new HashSet<int>();
        int leaks = 0;
        for (int i = 0; i < 1000; i++)
        {
            int mine = i;
            Green.Spawn(() =>
            {
                carriers.Add(Environment.CurrentManagedThreadId);
                if (s_local.Value != null) leaks++;
                s_local.Value = "greenlet " + mine;
                Green.Sleep(0);
                if (s_local.Value != "greenlet " + mine) leaks++;
            }).Join();
        }
        Assert.That(leaks, Is.Zero);
        Assert.That(carriers.Count, Is.LessThan(1000), "carrier threads were reused");
    }

    [Test]
    public void ACarrierGetsItsNameBackgroundFlagAndPriorityBackWhenABodyChangedThem()
    {
        // As the thread pool resets a thread after each work item: a body that named its thread left the name on later
        // greenlets' log lines, and one that made its thread a foreground thread kept the process from exiting.
        Thread? carrier = null;
        string? nameBefore = null;
        var g = Green.Spawn(() =>
        {
            carrier = Thread.CurrentThread;
            nameBefore = carrier.Name;
            carrier.Name = "job-7";
            carrier.IsBackground = false;
            carrier.Priority = ThreadPriority.Lowest;
        });
        g.Join();
        Assert.That(nameBefore, Does.StartWith("GreenRuntime carrier #"));
        Assert.That((carrier!.Name, carrier.IsBackground, carrier.Priority), Is.EqualTo((nameBefore, true, ThreadPriority.Normal)));
    }

    [Test]
    public void AThousandInterleavedGreenletsEachKeepTheirOwnValue()
    {
        int leaks = 0;
        var all = new List<Greenlet>();
        for (int i = 0; i < 1000; i++)
        {
            int mine = i;
            all.Add(Green.Spawn(() =>
            {
                if (s_local.Value != null) leaks++;
                s_local.Value = "g" + mine;
                for (int k = 0; k < 3; k++)
                {
                    Green.Sleep(0);
                    if (s_local.Value != "g" + mine) leaks++;
                }
            }));
        }
        // Stackless ones interleaved with them, sharing the free carriers their continuations run on.
        for (int i = 0; i < 200; i++)
        {
            int mine = i;
            all.Add(Green.SpawnAsync(async () =>
            {
                if (s_local.Value != null) leaks++;
                s_local.Value = "s" + mine;
                await Task.Yield();
                if (s_local.Value != "s" + mine) leaks++;
            }));
        }
        Green.JoinAll(all);
        // And a fresh greenlet after all of them starts clean.
        string? after = "unset";
        Green.Spawn(() => after = s_local.Value).Join();
        Assert.That(leaks, Is.Zero);
        Assert.That(after, Is.Null);
    }

    [Test]
    public void HubCallbacksRunUnderTheDefaultContextAndCannotChangeAParkedGreenlets()
    {
        string? inCallback = "unset";
        string? afterCallback = "unset";
        var g = Green.Spawn(() =>
        {
            s_local.Value = "mine";
            var self = Green.Current;
            // The timer fires on this greenlet's parked carrier thread while it sleeps.
            Hub.Current.Post(() => { inCallback = s_local.Value; s_local.Value = "callback"; });
            Green.Sleep(20);
            afterCallback = s_local.Value;
        });
        g.Join();
        Assert.That(inCallback, Is.Null);
        Assert.That(afterCallback, Is.EqualTo("mine"));
    }

    [Test]
    public void HubCallbacksCannotSeeOrChangeTheValuesOfAGreenletParkedWithItsFlowSuppressed()
    {
        string? inCallback = "unset";
        string? afterCallback = "unset";
        bool stillSuppressed = false;
        var g = Green.Spawn(() =>
        {
            s_local.Value = "mine";
            using (ExecutionContext.SuppressFlow())
            {
                Hub.Current.Post(() => { inCallback = s_local.Value; s_local.Value = "callback"; });
                Green.Sleep(20); // the callback runs on this parked greenlet's thread
                afterCallback = s_local.Value;
                stillSuppressed = ExecutionContext.IsFlowSuppressed();
            } // the greenlet's own AsyncFlowControl undoes the suppression
        });
        g.Join();
        Assert.That(g.Successful, Is.True, g.Exception?.ToString());
        Assert.That(inCallback, Is.Null);
        Assert.That((afterCallback, stillSuppressed), Is.EqualTo(("mine", true)));
    }

    /// <summary>A context of the kind UI frameworks install: anything but the default one.</summary>
    private sealed class ForeignContext : SynchronizationContext
    {
        public int Posts;

        public override void Post(SendOrPostCallback d, object? state)
        {
            Interlocked.Increment(ref Posts);
            base.Post(d, state);
        }
    }

    [Test]
    public void ASynchronizationContextABodyInstallsStaysWithItsGreenlet()
    {
        var foreign = new ForeignContext();
        var installers = new HashSet<int>();
        var afterPark = new List<SynchronizationContext?>();
        Green.JoinAll(Enumerable.Range(0, 10).Select(_ => Green.Spawn(() =>
        {
            installers.Add(Environment.CurrentManagedThreadId);
            SynchronizationContext.SetSynchronizationContext(foreign);
            Green.Sleep(1);
            afterPark.Add(SynchronizationContext.Current);
        })).ToList());
        // Greenlets started afterwards run on the carriers those used: none may find the context there. They are all
        // suspended at once, so they drain the idle pool through those carriers whatever fresh ones its refill added.
        var reused = new HashSet<int>();
        var seen = new List<SynchronizationContext?>();
        Green.JoinAll(Enumerable.Range(0, 50).Select(_ => Green.Spawn(() =>
        {
            if (installers.Contains(Environment.CurrentManagedThreadId)) reused.Add(Environment.CurrentManagedThreadId);
            seen.Add(SynchronizationContext.Current);
            Green.Sleep(1);
            seen.Add(SynchronizationContext.Current);
        })).ToList());
        Assert.That(afterPark, Has.All.SameAs(foreign), "each greenlet's own context is back after its park");
        Assert.That(reused, Is.Not.Empty, "later greenlets ran on the carriers of those that installed a context");
        Assert.That(seen, Has.All.Null);
    }

    [Test]
    public void ReactorCompletionsWhileAGreenletWithAForeignContextIsParkedNeitherPostToItNorGoToTheThreadPool()
    {
        // A stackful greenlet with a UI-style context parks often, so the scheduler keeps running on its thread and
        // polls the reactor there. The stackless greenlet's ConfigureAwait(false) continuations, completed by the
        // reactor, must run inline on the hub: .NET queues such a continuation to the thread pool when it is completed
        // under a foreign context.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        var foreign = new ForeignContext();
        const int rounds = 300;
        int received = 0, offHub = 0;
        var stackless = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[16];
            while (received < rounds)
            {
                await WaitForByte(server).ConfigureAwait(false);
                if (Hub.CurrentOrNull == null)
                {
                    offHub++;
                    return;
                }
                received += CooperativeSocket.ReceiveNow(server, buffer, out _);
            }
        });
        var legacy = Green.Spawn(() =>
        {
            SynchronizationContext.SetSynchronizationContext(foreign);
            for (int sent = 0; sent < rounds && !stackless.Dead; sent++)
            {
                client.Send([(byte)sent]);
                while (received <= sent && !stackless.Dead) Green.Sleep(0);
            }
        });
        long before = ThreadPool.CompletedWorkItemCount;
        var done = Green.JoinAll([stackless, legacy], TimeSpan.FromSeconds(30));
        long poolItems = ThreadPool.CompletedWorkItemCount - before;
        Assert.That(done, Has.Count.EqualTo(2), "both finished");
        Assert.That(offHub, Is.Zero, "every continuation ran on the hub");
        Assert.That(received, Is.EqualTo(rounds));
        Assert.That(foreign.Posts, Is.Zero, "nothing was posted into the parked greenlet's context");
        Assert.That(poolItems, Is.LessThan(rounds / 4), $"{poolItems} thread-pool work items for {rounds} completions");

        // An async method (StreamReader's reads are of this kind) whose own await is ConfigureAwait(false).
        static async Task WaitForByte(Socket socket) =>
            await CooperativeSocket.WaitReadableAsync(socket, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
    }

    [Test]
    public void ActivityParentFlowsToAChildGreenletWithTheSameTraceId()
    {
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "AmbientContextTests",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        using var source = new ActivitySource("AmbientContextTests");
        using var parent = source.StartActivity("parent")!;
        Activity? seen = null;
        ActivityTraceId childTrace = default;
        ActivitySpanId childParent = default;
        Green.Spawn(() =>
        {
            seen = Activity.Current;
            using var child = source.StartActivity("child")!;
            childTrace = child.TraceId;
            childParent = child.ParentSpanId;
        }).Join();
        Assert.That(seen, Is.SameAs(parent));
        Assert.That(childTrace, Is.EqualTo(parent.TraceId));
        Assert.That(childParent, Is.EqualTo(parent.SpanId));
        Assert.That(Activity.Current, Is.SameAs(parent), "the child's activity did not leak out");
        // A greenlet spawned with no activity does not see another greenlet's.
        Activity? other = parent;
        parent.Stop();
        Activity.Current = null;
        Green.Spawn(() => { using var a = source.StartActivity("x"); Green.Sleep(0); }).Join();
        Green.Spawn(() => other = Activity.Current).Join();
        Assert.That(other, Is.Null);
    }

    [Test]
    public void CultureFlowsInAndChangesStayInside()
    {
        var saved = CultureInfo.CurrentCulture;
        try
        {
            CultureInfo.CurrentCulture = new CultureInfo("fr-FR");
            string? inside = null;
            Green.Spawn(() =>
            {
                inside = CultureInfo.CurrentCulture.Name;
                CultureInfo.CurrentCulture = new CultureInfo("de-DE");
                CultureInfo.CurrentUICulture = new CultureInfo("de-DE");
                Green.Sleep(1);
            }).Join();
            Assert.That(inside, Is.EqualTo("fr-FR"));
            Assert.That(CultureInfo.CurrentCulture.Name, Is.EqualTo("fr-FR"));
            CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
            string? fresh = null;
            Green.Spawn(() => fresh = CultureInfo.CurrentCulture.Name).Join();
            Assert.That(fresh, Is.EqualTo(""), "the invariant culture, not a previous greenlet's de-DE");
        }
        finally
        {
            CultureInfo.CurrentCulture = saved;
        }
    }

    [Test]
    public void ThreadStaticStaysPerCarrierThreadAndGreenletLocalIsPerGreenlet()
    {
        var local = new GreenletLocal<string>();
        string? other = "unset";
        Green.Spawn(() => local.Value = "a").Join();
        Green.Spawn(() => other = local.IsValueCreated ? local.Value : null).Join();
        Assert.That(other, Is.Null);
    }
}
