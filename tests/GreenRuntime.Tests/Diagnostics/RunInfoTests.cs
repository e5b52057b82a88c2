namespace GreenRuntime.Tests.Diagnostics;

[TestFixture]
public class RunInfoTests
{
    private Hub _hub = null!;

    [SetUp]
    public void SetUp() => _hub = new Hub(new HubOptions { TrackSpawnStacks = true });

    [TearDown]
    public void TearDown() => _hub.Dispose();

    private static GreenletRunInfo Entry(HubRunInfo info, Greenlet g) => info.Greenlets.Single(e => e.Id == g.Id);

    [Test]
    public void Lists_every_live_greenlet_in_its_state()
    {
        var sleeper = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "sleeper");
        var joiner = Green.Spawn(() => { sleeper.Join(TimeSpan.FromSeconds(20)); }, "joiner");
        var waiter = Green.Spawn(() => { sleeper.Join(); }, "waiter");
        var awaited = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stackless = Green.SpawnAsync(async () => await awaited.Task, "async");
        var yielder = new Greenlet(() => { while (true) Green.Sleep(0); }, "yielder");
        yielder.Start();
        Green.Sleep(20);                       // everything above ran until its first wait
        var fresh = Green.Spawn(() => { }, "fresh"); // started, not run yet
        var finished = Green.Spawn(() => { }, "finished");
        finished.Join();

        var info = _hub.GetRunInfo();

        Assert.That(info.Greenlets[0].IsMain, Is.True);
        Assert.That(info.Greenlets[0].State, Is.EqualTo(GreenletState.Running));
        Assert.That(info.Greenlets[0].IsCurrent, Is.True);
        Assert.That(info.Greenlets.Select(g => g.Name), Is.EqualTo(new[] { "Main", "sleeper", "joiner", "waiter", "async", "yielder" }),
            "the main greenlet, then live greenlets oldest first; finished ones and 'fresh' (it ran during finished.Join) are gone");
        Assert.That(fresh.Dead, Is.True);

        var s = Entry(info, sleeper);
        Assert.That((s.State, s.WaitReason, s.IsStackless), Is.EqualTo((GreenletState.Parked, WaitReason.Sleep, false)));
        Assert.That(s.WakesIn, Is.Not.Null.And.GreaterThan(TimeSpan.FromSeconds(20)).And.LessThanOrEqualTo(TimeSpan.FromSeconds(30)));
        Assert.That(s.SinceLastSwitch, Is.Not.Null.And.GreaterThanOrEqualTo(TimeSpan.Zero));
        Assert.That(s.Describe(), Does.StartWith("sleeping until +"));
        Assert.That((s.ParentId, s.ParentName), Is.EqualTo(((long?)_hub.MainGreenlet.Id, "Main")));
        Assert.That(s.SpawnStack, Does.Contain(nameof(Lists_every_live_greenlet_in_its_state)));

        var j = Entry(info, joiner);
        Assert.That((j.State, j.WaitReason), Is.EqualTo((GreenletState.Parked, WaitReason.Join)));
        Assert.That(j.WakesIn, Is.Not.Null.And.LessThanOrEqualTo(TimeSpan.FromSeconds(20)), "a join with a timeout has a timer");
        Assert.That(j.Describe(), Does.StartWith("parked in Join (times out in"));

        var w = Entry(info, waiter);
        Assert.That((w.State, w.WaitReason, w.WakesIn), Is.EqualTo((GreenletState.Parked, WaitReason.Join, (TimeSpan?)null)));
        Assert.That(w.Describe(), Is.EqualTo("parked in Join"));

        var a = Entry(info, stackless);
        Assert.That((a.State, a.IsStackless), Is.EqualTo((GreenletState.Awaiting, true)));

        var y = Entry(info, yielder);
        Assert.That((y.State, y.IsStackless), Is.EqualTo((GreenletState.Ready, false)));
        Assert.That(y.Describe(), Is.EqualTo("ready"));

        // A kill of a stackless greenlet waits for the foreign task it awaits (docs/core.md): end that first.
        awaited.SetResult();
        Green.KillAll([sleeper, joiner, waiter, yielder, stackless]);
    }

    [Test]
    public void A_spawned_greenlet_that_has_not_run_yet_is_scheduled()
    {
        var g = Green.Spawn(() => { }, "later");
        var entry = Entry(_hub.GetRunInfo(), g);
        Assert.That(entry.State, Is.EqualTo(GreenletState.Scheduled));
        Assert.That(entry.SinceLastSwitch, Is.Null);
        g.Join();
    }

    [Test]
    public void The_blocked_steps_of_a_stackless_greenlet_are_listed_under_it()
    {
        // Two continuations of one async greenlet each block with the baton released (Task.WhenAll of two branches):
        // the greenlet itself only awaits, and what holds it up is in its steps.
        using var gate = new ManualResetEventSlim();
        static async Task Branch(ManualResetEventSlim gate)
        {
            await Task.Yield();
            GreenRuntime.LowLevel.Parking.RunReleased(static g => g.Wait(TimeSpan.FromSeconds(10)), gate, WaitReason.Lock);
        }
        var g = Green.SpawnAsync(() => Task.WhenAll(Branch(gate), Branch(gate)), "two-branches");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        GreenletRunInfo entry;
        do
        {
            Green.Sleep(5);
            entry = Entry(_hub.GetRunInfo(), g);
        } while (entry.BlockedSteps.Count < 2 && DateTime.UtcNow < deadline);
        Assert.That(entry.BlockedSteps, Has.Count.EqualTo(2));
        Assert.That(entry.BlockedSteps.Select(s => (s.State, s.WaitReason)), Is.All.EqualTo((GreenletState.Parked, WaitReason.Lock)));
        Assert.That(entry.BlockedSteps.All(s => s.SinceLastSwitch is not null));
        Assert.That(entry.Describe(), Is.EqualTo("awaiting (stackless), 2 blocked steps"));
        var text = _hub.FormatRunInfo();
        Assert.That(text.Split('\n').Count(l => l.Contains("step: parked in Lock, since ")), Is.EqualTo(2), text);
        Assert.That(Entry(_hub.GetRunInfo(), Green.Current).BlockedSteps, Is.Empty, "a stackful greenlet has none");
        gate.Set();
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
    }

    [Test]
    public void Formatted_run_info_has_a_line_per_greenlet_and_the_carriers()
    {
        var sleeper = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "napper");
        Green.Sleep(10);
        var text = _hub.FormatRunInfo();
        var lines = text.Split('\n');
        Assert.That(lines[0], Does.StartWith($"<Hub #{_hub.Id}> at ").And.Contain("2 greenlets"));
        Assert.That(lines.Any(l => l.Contains("Main") && l.Contains("running (current)")));
        Assert.That(lines.Any(l => l.Contains($" {sleeper.Id}  napper") && l.Contains("stackful") && l.Contains("sleeping until +") && l.Contains("Main#")));
        Assert.That(text, Does.Contain("spawned at:"));
        Assert.That(text, Does.Match(@"carriers \(\d+ KiB stacks, pool shared by every hub\): \d+ threads, \d+ idle, \d+ busy"));

        var info = _hub.GetRunInfo();
        Assert.That(info.Carriers.Threads, Is.GreaterThanOrEqualTo(info.Carriers.Idle));
        Assert.That(info.Carriers.Busy, Is.GreaterThanOrEqualTo(1), "the parked sleeper keeps a carrier");
        Assert.That(info.Carriers.HeldByThisHub, Is.EqualTo(1));
        sleeper.Kill();
    }

    [Test]
    public void PrintRunInfo_writes_to_Console_Out()
    {
        var saved = Console.Out;
        var writer = new StringWriter();
        Console.SetOut(writer);
        try
        {
            Green.PrintRunInfo();
        }
        finally
        {
            Console.SetOut(saved);
        }
        Assert.That(writer.ToString(), Does.StartWith($"<Hub #{_hub.Id}> at ").And.Contain("Main"));
    }

    [Test]
    public void Another_thread_gets_run_info_through_the_hub()
    {
        var sleeper = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "napper");
        var fromOtherThread = Task.Run(() => _hub.GetRunInfo());
        Green.Wait(fromOtherThread, TimeSpan.FromSeconds(10)); // the main greenlet parks: the hub serves the request
        var info = fromOtherThread.Result;
        Assert.That(info.Current, Is.EqualTo("hub callback"));
        Assert.That(info.Greenlets.Select(g => g.Name), Does.Contain("napper"));
        Assert.That(info.Greenlets[0].State, Is.EqualTo(GreenletState.Parked), "the main greenlet waits in Green.Wait");
        sleeper.Kill();
    }
}
