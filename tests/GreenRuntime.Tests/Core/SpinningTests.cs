namespace GreenRuntime.Tests.Core;

/// <summary>Carriers that spin before parking (Scheduling/Hub.Spinning.cs) change costs, never behaviour.</summary>
[TestFixture]
public class SpinningTests : HubTest
{
    [Test]
    public void A_fast_ping_pong_keeps_its_order_and_leaves_no_spinner_behind()
    {
        var trace = new List<int>();
        var a = Green.Spawn(() => { for (int i = 0; i < 2000; i++) { trace.Add(0); Green.Sleep(0); } });
        var b = Green.Spawn(() => { for (int i = 0; i < 2000; i++) { trace.Add(1); Green.Sleep(0); } });
        Green.JoinAll([a, b]);
        Assert.That(trace, Has.Count.EqualTo(4000));
        for (int i = 0; i < trace.Count; i++) Assert.That(trace[i], Is.EqualTo(i % 2), $"switch {i}");
        Assert.That(() => Hub.HasSpinner, Is.False.After(2000, 10), "the spinner slot is released when the spin ends");
    }

    [Test]
    public void Many_greenlets_cycling_fast_still_run_in_spawn_order()
    {
        const int greenlets = 50, rounds = 40;
        var trace = new List<int>();
        var all = Enumerable.Range(0, greenlets).Select(id => Green.Spawn(() =>
        {
            for (int r = 0; r < rounds; r++)
            {
                trace.Add(id);
                Green.Sleep(0);
            }
        })).ToList();
        Green.JoinAll(all);
        var expected = Enumerable.Range(0, rounds).SelectMany(_ => Enumerable.Range(0, greenlets));
        Assert.That(trace, Is.EqualTo(expected));
        var info = Hub.GetRunInfo();
        Assert.That(info.NudgesSent, Is.GreaterThan(0), "the holder woke the next queued carrier ahead of its turn");
        Assert.That(info.NudgesCaught, Is.InRange(0, info.NudgesSent));
        Assert.That(() => Hub.HasSpinner, Is.False.After(2000, 10), "a nudged carrier gives the spinner slot back");
    }
}

/// <summary>The same with spinning turned off: only the cost changes.</summary>
[TestFixture]
public class NoSpinningTests : HubTest
{
    protected override HubOptions CreateOptions(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory) =>
        new() { LoggerFactory = loggerFactory, SpinBeforeParking = false };

    [Test]
    public void A_ping_pong_never_takes_the_spinner_slot()
    {
        bool sawSpinner = false;
        var a = Green.Spawn(() => { for (int i = 0; i < 500; i++) { sawSpinner |= Hub.HasSpinner; Green.Sleep(0); } });
        var b = Green.Spawn(() => { for (int i = 0; i < 500; i++) { sawSpinner |= Hub.HasSpinner; Green.Sleep(0); } });
        Green.JoinAll([a, b]);
        Assert.That(sawSpinner, Is.False);
    }

    [Test]
    public void No_carrier_is_nudged()
    {
        var all = Enumerable.Range(0, 20).Select(_ => Green.Spawn(() =>
        {
            for (int r = 0; r < 50; r++) Green.Sleep(0);
        })).ToList();
        Green.JoinAll(all);
        Assert.That(Hub.NudgesSent, Is.Zero);
    }
}
