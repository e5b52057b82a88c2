using System.Diagnostics;
using System.Globalization;

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
