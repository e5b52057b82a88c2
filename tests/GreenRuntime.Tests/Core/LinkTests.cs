namespace GreenRuntime.Tests.Core;

/// <summary>link / link_value / link_exception routing.</summary>
public class LinkTests : HubTest
{
    [Test]
    public void LinksAreRoutedBySuccessOrFailure()
    {
        var calls = new List<string>();
        var ok = new Greenlet(() => { });
        var bad = new Greenlet(() => throw new InvalidOperationException());
        foreach (var (g, name) in new[] { (ok, "ok"), (bad, "bad") })
        {
            g.Link(_ => calls.Add(name + ":all"));
            g.LinkValue(_ => calls.Add(name + ":value"));
            g.LinkException(_ => calls.Add(name + ":exception"));
            g.Start();
        }
        Green.JoinAll([ok, bad]);
        Green.Sleep(0);
        Assert.That(calls, Is.EquivalentTo(new[] { "ok:all", "ok:value", "bad:all", "bad:exception" }));
    }

    [Test]
    public void LinksRunInTheOrderTheyWereAddedAndReceiveTheGreenlet()
    {
        var seen = new List<(int, Greenlet)>();
        var g = Green.Spawn(() => { });
        g.Link(x => seen.Add((1, x)));
        g.Link(x => seen.Add((2, x)));
        g.Join();
        Green.Sleep(0);
        Assert.That(seen, Is.EqualTo(new[] { (1, g), (2, g) }));
    }

    [Test]
    public void LinksAddedAfterFinishStillFireOnce()
    {
        var g = Green.Spawn(() => 1);
        g.Join();
        var count = 0;
        g.Link(_ => count++);
        g.LinkException(_ => count += 100);
        Green.Sleep(0);
        Green.Sleep(0);
        Assert.That(count, Is.EqualTo(1));
    }

    [Test]
    public void UnlinkPreventsTheCallback()
    {
        var count = 0;
        Action<Greenlet> cb = _ => count++;
        var g = Green.Spawn(() => Green.Sleep(1));
        g.Link(cb);
        g.Unlink(cb);
        g.Join();
        Green.Sleep(0);
        Assert.That(count, Is.EqualTo(0));
    }

    [Test]
    public void UnlinkAmongSeveralLinksRemovesOnlyThatCallbackWhereverItWasAdded()
    {
        var calls = new List<string>();
        Action<Greenlet> a = _ => calls.Add("a"), b = _ => calls.Add("b"), c = _ => calls.Add("c");
        var g = Green.Spawn(() => Green.Sleep(1));
        g.Link(a);
        g.Link(b);   // the second and later links live out of line
        g.Link(c);
        g.Link(b);
        g.Unlink(b); // every registration of b, the first inline one untouched
        g.Join();
        Green.Sleep(0);
        Assert.That(calls, Is.EqualTo(new[] { "a", "c" }));
    }

    [Test]
    public void AnUnnamedGreenletKeepsOneGeneratedNameAndANamedOneItsName()
    {
        var unnamed = new Greenlet(() => { });
        var named = new Greenlet(() => { }, "worker");
        Assert.That(unnamed.Name, Is.EqualTo($"Greenlet-{unnamed.Id}"));
        Assert.That(unnamed.Name, Is.SameAs(unnamed.Name));
        Assert.That(named.Name, Is.EqualTo("worker"));
        Assert.That(named.ToString(), Is.EqualTo($"<Greenlet worker#{named.Id}>"));
    }

    [Test]
    public void BlockingInsideARawLinkCallbackRaisesAClearError()
    {
        Exception? error = null;
        var g = Green.Spawn(() => { });
        g.RawLink(_ =>
        {
            try { Green.Sleep(1); }
            catch (Exception e) { error = e; }
        });
        g.Join();
        Green.Sleep(0);
        Assert.That(error, Is.InstanceOf<InvalidOperationException>());
        Assert.That(error!.Message, Does.Contain("must not block"));
    }

    [Test]
    public void ALinkRunsInAGreenletOfItsOwnAndMayBlock()
    {
        var log = new List<string>();
        var g = Green.Spawn(() => log.Add("body"));
        Greenlet? linkGreenlet = null;
        g.Link(finished =>
        {
            linkGreenlet = Green.Current;
            Green.Sleep(5); // blocking is fine in a link
            log.Add("link saw " + (finished == g));
        });
        g.LinkValue(_ => log.Add("value link"));
        g.LinkException(_ => log.Add("never"));
        g.Join();
        Green.Sleep(30);
        Assert.That(log, Is.EqualTo(new[] { "body", "value link", "link saw True" }), "each link in its own greenlet, started in order");
        Assert.That(linkGreenlet, Is.Not.Null.And.Not.SameAs(Hub.HubGreenlet));
    }

    [Test]
    public void UnlinkRemovesALinkAndARawLink()
    {
        int calls = 0;
        Action<Greenlet> a = _ => calls++, b = _ => calls += 10;
        var g = Green.Spawn(() => Green.Sleep(1));
        g.Link(a);
        g.RawLink(b);
        g.Unlink(a);
        g.Unlink(b);
        g.Join();
        Green.Sleep(5);
        Assert.That(calls, Is.Zero);
    }

    [Test]
    public void AThrowingLinkIsLoggedAndTheOthersStillRun()
    {
        var second = false;
        var g = Green.Spawn(() => { });
        g.Link(_ => throw new Exception("link failed"));
        g.Link(_ => second = true);
        g.Join();
        Green.Sleep(0);
        Assert.That(second, Is.True);
        Assert.That(Logs.Entries.Any(e => e.Exception?.Message == "link failed"), Is.True);
    }
}
