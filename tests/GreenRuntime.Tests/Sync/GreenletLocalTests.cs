namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__local.py.</summary>
public class GreenletLocalTests : HubTest
{
    [Test]
    public void EachGreenletSeesItsOwnValue()
    {
        var local = new GreenletLocal<int>();
        local.Value = 100;
        var seen = new List<(int, int)>();
        var gs = Enumerable.Range(1, 4).Select(i => i % 2 == 0
            ? Green.Spawn(() => { local.Value = i; Green.Sleep(1); seen.Add((i, local.Value)); })
            : Green.SpawnAsync(async () => { local.Value = i; await Task.Delay(1); seen.Add((i, local.Value)); })).ToList();
        Green.JoinAll(gs, raiseError: true);
        Assert.That(seen.All(p => p.Item1 == p.Item2), Is.True);
        Assert.That(local.Value, Is.EqualTo(100), "the main greenlet's value is untouched");
    }

    [Test]
    public void AChildDoesNotSeeItsParentsValue()
    {
        var local = new GreenletLocal<string>();
        local.Value = "parent";
        var child = Green.Spawn(() => (local.IsValueCreated, local.Value));
        var stacklessChild = Green.SpawnAsync(async () => { await Task.Yield(); return (local.IsValueCreated, local.Value); });
        Assert.That(child.Get(), Is.EqualTo((false, (string?)null)));
        Assert.That(stacklessChild.Get(), Is.EqualTo((false, (string?)null)));
    }

    [Test]
    public void FactoryRunsOncePerGreenlet()
    {
        int calls = 0;
        var local = new GreenletLocal<List<int>>(() => { calls++; return new List<int>(); });
        local.Value.Add(1);
        local.Value.Add(2);
        Green.Spawn(() => local.Value.Add(3)).Join();
        Assert.That(local.Value, Is.EqualTo(new[] { 1, 2 }));
        Assert.That(calls, Is.EqualTo(2));
        local.Reset();
        Assert.That(local.IsValueCreated, Is.False);
    }

    [Test]
    public void OffAHubTheValueIsPerThread()
    {
        var local = new GreenletLocal<int>();
        local.Value = 1;
        var other = Task.Run(() => { var before = local.IsValueCreated; local.Value = 2; return (before, local.Value); });
        Assert.That(Green.Wait(other), Is.EqualTo((false, 2)));
        Assert.That(local.Value, Is.EqualTo(1));
    }
}
