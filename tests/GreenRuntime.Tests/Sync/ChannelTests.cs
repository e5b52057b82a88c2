namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__queue.py TestChannel.</summary>
public class ChannelTests : HubTest
{
    [Test]
    public void PutReturnsOnlyAfterTheGetterRanWithTheItem()
    {
        // gevent's test__queue.py TestChannel.test_send, verbatim in meaning.
        var channel = new GreenChannel<string>();
        var events = new List<string>();
        var another = Green.Spawn(() =>
        {
            events.Add(channel.Get());
            events.Add(channel.Get());
        });
        events.Add("sending");
        channel.Put("hello");
        events.Add("sent hello");
        channel.Put("world");
        events.Add("sent world");
        another.Join();
        Assert.That(events, Is.EqualTo(new[] { "sending", "hello", "sent hello", "world", "sent world" }));
    }

    [Test]
    public void PutBlocksUntilAGetterTakesTheItem()
    {
        var ch = new GreenChannel<string>();
        var events = new List<string>();
        var sender = Green.Spawn(() =>
        {
            ch.Put("hello"); events.Add("sent hello");
            ch.Put("world"); events.Add("sent world");
        });
        Green.Sleep(0);
        Assert.That(events, Is.Empty, "nobody took the item yet");
        events.Add("received " + ch.Get());
        events.Add("received " + ch.Get());
        sender.Join();
        Assert.That(events, Is.EqualTo(new[] { "received hello", "sent hello", "received world", "sent world" }));
    }

    [Test]
    public void GetBlocksUntilAPut()
    {
        var ch = new GreenChannel<int>();
        var getter = Green.SpawnAsync(async () => await ch.GetAsync());
        Green.Sleep(0);
        Assert.That(ch.HasWaitingGetter, Is.True);
        Assert.That(ch.TryPut(7), Is.True);
        Assert.That(getter.Get(), Is.EqualTo(7));
    }

    [Test]
    public void NonBlockingFormsNeedTheOtherSideWaiting()
    {
        var ch = new GreenChannel<int>();
        Assert.That(ch.TryPut(1), Is.False);
        Assert.That(ch.TryGet(out _), Is.False);
        Assert.Throws<QueueFullException>(() => ch.Put(1, TimeSpan.Zero));
        Assert.Throws<QueueEmptyException>(() => ch.Get(TimeSpan.Zero));
        var putter = Green.Spawn(() => ch.Put(5));
        Green.Sleep(0);
        Assert.That(ch.TryGet(out var v) && v == 5, Is.True);
        putter.Join();
        Assert.That(putter.Successful, Is.True);
    }

    [Test]
    public void PutterWhoseTimeoutExpiredDoesNotDeliver()
    {
        var ch = new GreenChannel<int>();
        var putter = Green.Spawn(() => ch.Put(1, TimeSpan.FromMilliseconds(5)));
        putter.Join();
        Assert.That(putter.Exception, Is.InstanceOf<QueueFullException>());
        Assert.That(ch.TryGet(out _), Is.False);
    }

    [Test]
    public void StacklessPutAsyncCompletesWhenTaken()
    {
        var ch = new GreenChannel<int>();
        bool done = false;
        var putter = Green.SpawnAsync(async () => { await ch.PutAsync(3); done = true; });
        Green.Sleep(1);
        Assert.That(done, Is.False);
        Assert.That(ch.Get(), Is.EqualTo(3));
        putter.Join();
        Assert.That(done, Is.True);
    }

    [Test]
    public void GetInMainWithNoPutterRaisesLoopExit()
    {
        Assert.Throws<LoopExitException>(() => new GreenChannel<int>().Get());
    }

    [Test]
    public void ForeignThreadRendezvous()
    {
        var ch = new GreenChannel<int>();
        var t = Task.Run(() => { for (int i = 0; i < 10; i++) ch.Put(i, TimeSpan.FromSeconds(10)); });
        var got = Green.Spawn(() => Enumerable.Range(0, 10).Select(_ => ch.Get(TimeSpan.FromSeconds(10))).ToList());
        Assert.That(got.Get(), Is.EqualTo(Enumerable.Range(0, 10)));
        Green.Wait(t);
    }

    [Test]
    public void AnItemWhosePutReturnedIsNotLostWhenItsGetterIsKilledBeforeResuming()
    {
        // Found by the soak: a put hands the item to the waiting getter and completes; a kill that reaches the
        // getter before it resumes wins the resume, and the item used to be dropped when no other getter waited.
        var ch = new GreenChannel<int>();
        Greenlet getter = Green.Spawn(() => ch.Get());
        Green.Sleep(0); // the getter waits
        var put = ch.PutAsync(42); // handed over on the hub: the put is done, the getter is ready to resume
        Assert.That(put.IsCompletedSuccessfully, Is.True);
        getter.Kill(block: false); // before the getter resumed with it
        getter.Join();
        Assert.That(getter.Value, Is.InstanceOf<GreenletExit>(), "the kill wins the getter's resume");
        Assert.That(ch.TryGet(out var item), Is.True, "the item went back to the channel for the next getter");
        Assert.That(item, Is.EqualTo(42));
        Assert.That(ch.TryGet(out _), Is.False, "and only once");
    }

    [Test]
    public void AGivenBackItemGoesToTheNextGetterBeforeAWaitingPutter()
    {
        var ch = new GreenChannel<string>();
        var killed = Green.Spawn(() => ch.Get());
        var next = Green.Spawn(() => ch.Get());
        Green.Sleep(0);
        _ = ch.PutAsync("first"); // to the first getter
        killed.Kill(block: false);
        Assert.That(next.Get(), Is.EqualTo("first"), "a live getter was waiting: it gets the item");

        var killed2 = Green.Spawn(() => ch.Get());
        Green.Sleep(0);
        _ = ch.PutAsync("second");
        killed2.Kill(block: false);
        killed2.Join(); // nobody waits now: the channel keeps "second"
        var putter = Green.Spawn(() => ch.Put("third"));
        Green.Sleep(0);
        Assert.That(ch.Get(), Is.EqualTo("second"), "the item whose put completed comes before a waiting putter's");
        Assert.That(ch.Get(), Is.EqualTo("third"));
        putter.Join();
        Assert.That(putter.Successful, Is.True);
    }
}
