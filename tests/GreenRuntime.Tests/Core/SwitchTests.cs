namespace GreenRuntime.Tests.Core;

/// <summary>Explicit Switch with greenlet-library semantics.</summary>
public class SwitchTests : HubTest
{
    [Test]
    public void TheSeedExamplePrints1324ThenMainContinues()
    {
        var output = new List<int>();
        Greenlet? gr1 = null, gr2 = null;
        gr1 = new Greenlet(() => { output.Add(1); gr2!.Switch(); output.Add(2); gr2!.Switch(); });
        gr2 = new Greenlet(() => { output.Add(3); gr1.Switch(); output.Add(4); });
        gr1.Switch();
        output.Add(0);
        Assert.That(output, Is.EqualTo(new[] { 1, 3, 2, 4, 0 }));
        Assert.That(gr2.Dead, Is.True);
        Assert.That(gr1.Dead, Is.False, "gr1 stays suspended in its second Switch");
        Assert.That(gr1.WaitReason, Is.EqualTo(WaitReason.Switch));
    }

    [Test]
    public void ValuesTravelThroughSwitch()
    {
        var main = Green.Current;
        var child = new Greenlet<int>(() =>
        {
            var got = (int)main.Switch("hello")!;
            return got * 2;
        });
        var fromChild = child.Switch();
        Assert.That(fromChild, Is.EqualTo("hello"));
        var result = child.Switch(21);
        Assert.That(result, Is.EqualTo(42), "a finished greenlet returns its value to its parent's Switch");
    }

    [Test]
    public void AFailingTargetRaisesInTheParent()
    {
        var child = new Greenlet(() => throw new InvalidOperationException("inner"));
        var e = Assert.Throws<InvalidOperationException>(() => child.Switch());
        Assert.That(e!.Message, Is.EqualTo("inner"));
    }

    [Test]
    public void SwitchToAGreenletThatIsNotSuspendedInSwitchIsRefused()
    {
        var sleeper = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        var e = Assert.Throws<InvalidOperationException>(() => sleeper.Switch());
        Assert.That(e!.Message, Does.Contain("suspended in Switch"));
        var stackless = Green.SpawnAsync(async () => await Task.Yield());
        Assert.Throws<InvalidOperationException>(() => stackless.Switch());
        sleeper.Kill();
        stackless.Join();
    }

    [Test]
    public void SwitchToSelfReturnsTheValue() => Assert.That(Green.Current.Switch(5), Is.EqualTo(5));

    [Test]
    public void AStacklessGreenletSwitchedAwayStaysSuspendedWhileAContinuationOfItsOwnRuns()
    {
        // A continuation posted to the greenlet's context (another async branch of its own) ran while the greenlet
        // waited in Switch, and marked it running, then awaiting: the child's end then found no Switch to return to.
        bool branchRan = false;
        var parent = Green.SpawnAsync(async () =>
        {
            _ = Branch();
            var child = new Greenlet<int>(() =>
            {
                Green.Sleep(100); // the branch's continuation comes meanwhile
                return 42;
            });
            return (int)child.Switch()!;

            async Task Branch()
            {
                await Task.Delay(10);
                branchRan = true;
            }
        });
        Assert.That(parent.Join(TimeSpan.FromSeconds(10)), Is.True, $"the parent's Switch never returned ({parent.State}, {parent.WaitReason})");
        Assert.That(parent.Value, Is.EqualTo(42));
        Assert.That(branchRan, Is.True);
    }
}
