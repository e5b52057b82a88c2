using System.Diagnostics.Metrics;

namespace GreenRuntime.Tests.Diagnostics;

/// <summary>The GreenRuntime meter, read with a MeterListener the way dotnet-counters reads it (observable polling).</summary>
[TestFixture]
public class MetricsTests
{
    private Hub _hub = null!;
    private MeterListener _listener = null!;
    private readonly Dictionary<string, long> _values = new();

    [SetUp]
    public void SetUp()
    {
        _hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(50), CaptureBlockedStacks = false });
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == "GreenRuntime") listener.EnableMeasurementEvents(instrument);
            },
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.Start();
    }

    [TearDown]
    public void TearDown()
    {
        _listener.Dispose();
        _hub.Dispose();
    }

    private void Record(Instrument instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var key = instrument.Name;
        foreach (var tag in tags) key += $"{{{tag.Key}={tag.Value}}}";
        _values[key] = value;
    }

    private Dictionary<string, long> Snapshot()
    {
        _values.Clear();
        _listener.RecordObservableInstruments();
        return new Dictionary<string, long>(_values);
    }

    [Test]
    public void Every_documented_instrument_is_published()
    {
        var names = Snapshot().Keys.Select(k => k.Split('{')[0]).Distinct();
        Assert.That(names, Is.SupersetOf(new[]
        {
            "greenruntime.greenlets.spawned", "greenruntime.greenlets.finished", "greenruntime.greenlets.failed",
            "greenruntime.greenlets.alive", "greenruntime.switches", "greenruntime.carriers.busy", "greenruntime.carriers.idle",
            "greenruntime.waits", "greenruntime.hub.blocked", "greenruntime.timers", "greenruntime.carriers.created",
        }));
        Assert.That(Snapshot().Keys, Does.Contain("greenruntime.waits{reason=sleep}").And.Contain("greenruntime.waits{reason=socket}")
            .And.Contain("greenruntime.waits{reason=dns}").And.Contain("greenruntime.waits{reason=file}")
            .And.Contain("greenruntime.waits{reason=task}").And.Contain("greenruntime.waits{reason=thread}"));
    }

    [Test]
    public void Greenlet_counts_move_as_greenlets_live_and_die()
    {
        var before = Snapshot();
        var sleepers = Enumerable.Range(0, 3).Select(i => Green.Spawn(() => Green.Sleep(TimeSpan.FromMilliseconds(50)), $"s{i}")).ToList();
        Green.Sleep(10);
        var during = Snapshot();
        var failing = Green.Spawn(() => throw new InvalidOperationException("boom"), "failing");
        Green.JoinAll([.. sleepers, failing]);
        Green.Wait(Task.Delay(10));
        var after = Snapshot();

        long Delta(Dictionary<string, long> s, string name) => s[name] - before[name];
        Assert.That(Delta(during, "greenruntime.greenlets.alive"), Is.EqualTo(3));
        Assert.That(Delta(during, "greenruntime.timers"), Is.GreaterThanOrEqualTo(3), "three sleep timers (plus the main greenlet's)");
        Assert.That(during["greenruntime.carriers.busy"], Is.GreaterThanOrEqualTo(3), "each parked stackful greenlet keeps a carrier");
        Assert.That(Delta(after, "greenruntime.greenlets.spawned"), Is.EqualTo(4));
        Assert.That(Delta(after, "greenruntime.greenlets.finished"), Is.EqualTo(4));
        Assert.That(Delta(after, "greenruntime.greenlets.failed"), Is.EqualTo(1));
        Assert.That(Delta(after, "greenruntime.greenlets.alive"), Is.Zero);
        Assert.That(Delta(after, "greenruntime.switches"), Is.GreaterThanOrEqualTo(8), "4 starts, 3 sleeper resumes, main's resumes");
        Assert.That(Delta(after, "greenruntime.waits{reason=sleep}"), Is.EqualTo(4), "three sleepers and the main greenlet's Sleep(10)");
        Assert.That(Delta(after, "greenruntime.waits{reason=join}"), Is.EqualTo(1));
        Assert.That(Delta(after, "greenruntime.waits{reason=task}"), Is.EqualTo(1));
        Assert.That(after["greenruntime.carriers.idle"], Is.GreaterThanOrEqualTo(0));
    }

    [Test]
    public void Carrier_threads_are_counted_by_whether_a_greenlet_waited_for_them()
    {
        _hub.Dispose();
        // A pool of its own (odd stack size): the hub's constructor makes two ahead; the third suspended greenlet waits for
        // a thread made on demand, which also wakes the refill thread to make some ahead.
        _hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 15 * 4096 });
        var before = Snapshot();
        var sleepers = Enumerable.Range(0, 6).Select(_ => Green.Spawn(() => Green.Sleep(30))).ToList();
        Green.JoinAll(sleepers, raiseError: true);
        var pool = GreenRuntime.Scheduling.CarrierPool.For(_hub.Options.CarrierStackSize);
        // The refill thread may still be making threads: a thread is counted in Created before it is made, by how once made.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (pool.MadeOnDemand + pool.MadeByRefill + pool.Prestarted != pool.Created && DateTime.UtcNow < deadline)
            Thread.Sleep(10);
        var after = Snapshot();
        long Delta(string made) => after[$"greenruntime.carriers.created{{made={made}}}"] - before[$"greenruntime.carriers.created{{made={made}}}"];
        Assert.That(pool.Prestarted, Is.EqualTo(2), "the constructor's two");
        Assert.That(pool.MadeOnDemand, Is.GreaterThanOrEqualTo(1), "the pool had two; six suspended greenlets needed more");
        Assert.That(pool.MadeOnDemand + pool.MadeByRefill + pool.Prestarted, Is.EqualTo(pool.Created), "every thread of this pool was counted once");
        Assert.That(Delta("on_demand"), Is.EqualTo(pool.MadeOnDemand), "made after the first snapshot, in this pool only");
        Assert.That(Delta("refill"), Is.EqualTo(pool.MadeByRefill));
        Assert.That(Delta("prestart"), Is.Zero, "prestarted before the first snapshot");
    }

    [Test]
    public void A_blocked_episode_is_counted()
    {
        var before = Snapshot()["greenruntime.hub.blocked"];
        // Hold the baton until the monitor has seen it held (at most 10 s): on a loaded machine its thread may not run
        // for the first few hundred milliseconds of any fixed spin, and then it sees too short a hold.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        Green.Spawn(() =>
        {
            while (Snapshot()["greenruntime.hub.blocked"] == before && DateTime.UtcNow < deadline)
                Busy.SpinWithoutYielding(TimeSpan.FromMilliseconds(10));
        }, "spinner").Join();
        Assert.That(Snapshot()["greenruntime.hub.blocked"] - before, Is.EqualTo(1), "one long hold is one blocked episode");
    }

    [Test]
    public void Counts_of_a_disposed_hub_are_kept()
    {
        var before = Snapshot()["greenruntime.greenlets.spawned"];
        var thread = new Thread(() =>
        {
            using var other = new Hub();
            Green.Spawn(() => { }).Join();
            Green.Spawn(() => { }).Join();
        });
        thread.Start();
        thread.Join();
        Assert.That(Snapshot()["greenruntime.greenlets.spawned"] - before, Is.EqualTo(2));
    }
}
