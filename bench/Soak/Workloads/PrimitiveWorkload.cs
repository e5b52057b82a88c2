using System.Net.Sockets;

namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// Greenlets that sleep, wait on every primitive (Event, AsyncResult, GreenQueue, GreenChannel, GreenSemaphore,
/// BoundedSemaphore, RLock) with and without timeouts, block in patched socket, file and Task waits, raise, and
/// are killed at random points. Invariants, checked when quiet: every semaphore count and the lock come back to
/// their start; no queue or channel item is lost or duplicated (each item put is got exactly once, counting what
/// is left in the queue); a timeout scope fires only in its own greenlet.
/// </summary>
internal sealed class PrimitiveWorkload(SoakContext context) : Workload(context, "prim")
{
    private const int SemaphoreStart = 3, BoundedStart = 2, QueueSize = 8;
    private readonly GreenSemaphore _semaphore = new(SemaphoreStart);
    private readonly BoundedSemaphore _bounded = new(BoundedStart);
    private readonly RLock _lock = new();
    private readonly GreenQueue<long> _queue = new(QueueSize);
    private readonly GreenChannel<long> _channel = new();
    private readonly Event _event = new();
    // Bookkeeping of one phase (between two quiet checks); replaced, not cleared, at each check, so that its
    // capacity does not carry the longest phase's size into the next memory comparison.
    private HashSet<long> _queuePut = new(), _queueGot = new(), _channelPut = new(), _channelGot = new();
    // Items whose putter was killed inside Put: the kill may have landed after the item was taken (the putter then
    // raises although the item was delivered), so they may or may not be got; timed-out puts never deliver.
    private HashSet<long> _killedPut = new();
    private long _nextItem, _checks;

    private static bool Expected(Exception e) =>
        e is TimeoutException or QueueFullException or QueueEmptyException or DeliberateException;

    protected override IReadOnlyList<Greenlet> Round()
    {
        var batch = new List<Greenlet>();
        int count = Random.Next(10, 30);
        for (int i = 0; i < count; i++)
        {
            int action = Random.Next(18);
            var g = Ledger.Spawn($"prim.{ActionName(action)}", Body(action), Expected);
            batch.Add(g);
            // Blocking points that nothing else ends are always killed; the others sometimes.
            if (action is 11 or 12 || Random.Next(100) < 30) batch.Add(KillLater(g, 40));
        }
        return batch;
    }

    private static string ActionName(int action) => action switch
    {
        0 => "sleep", 1 => "semaphore", 2 => "bounded", 3 => "rlock", 4 => "queue.put", 5 => "queue.get",
        6 => "channel.put", 7 => "channel.get", 8 => "event.wait", 9 => "event.set", 10 => "asyncresult",
        11 => "socket.wait", 12 => "file.wait", 13 => "task.wait", 14 => "queue.put.foreign", 15 => "event.set.foreign",
        16 => "semaphore.timeout", _ => "raise",
    };

    private Action Body(int action)
    {
        int ms = Random.Next(0, 30);
        var timeout = TimeSpan.FromMilliseconds(Random.Next(1, 60));
        switch (action)
        {
            case 0: return () => Thread.Sleep(ms);
            case 1: return () => { using (_semaphore.Enter(timeout)) Thread.Sleep(ms); };
            case 2: return () => { using (_bounded.Enter(timeout)) Thread.Sleep(ms); };
            case 3:
                return () =>
                {
                    using (_lock.Enter(timeout))
                    {
                        using (_lock.Enter()) Thread.Sleep(ms); // re-entry never waits
                        if (_lock.Owner != Green.Current) Ledger.Violate("prim: an RLock changed owner while held.");
                    }
                };
            case 4:
                return () =>
                {
                    long item = ++_nextItem;
                    try { _queue.Put(item, timeout); }
                    catch (GreenletExit) { _killedPut.Add(item); throw; }
                    if (!_queuePut.Add(item)) Ledger.Violate($"prim: queue item {item} put twice.");
                };
            case 5:
                return () =>
                {
                    long item = _queue.Get(timeout);
                    if (!_queueGot.Add(item)) Ledger.Violate($"prim: queue item {item} got twice.");
                };
            case 6:
                return () =>
                {
                    long item = ++_nextItem;
                    try { _channel.Put(item, timeout); }
                    catch (GreenletExit) { _killedPut.Add(item); throw; }
                    if (!_channelPut.Add(item)) Ledger.Violate($"prim: channel item {item} put twice.");
                };
            case 7:
                return () =>
                {
                    long item = _channel.Get(timeout);
                    if (!_channelGot.Add(item)) Ledger.Violate($"prim: channel item {item} got twice.");
                };
            case 8: return () => _event.Wait(timeout);
            case 9: return () => { _event.Set(); Thread.Sleep(ms); _event.Clear(); };
            case 10:
                return () =>
                {
                    var result = new AsyncResult<int>();
                    bool fail = Random.Next(3) == 0;
                    var setter = Ledger.Spawn("prim.asyncresult.setter", () =>
                    {
                        Thread.Sleep(ms);
                        if (fail) result.SetException(new DeliberateException("set on purpose"));
                        else result.Set(ms);
                    });
                    try
                    {
                        int value = result.Get(timeout);
                        if (value != ms) Ledger.Violate($"prim: AsyncResult gave {value}, {ms} was set.");
                    }
                    finally { setter.Join(); }
                };
            case 11:
                return () =>
                {
                    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    socket.Connect(Context.EchoEndPoint);
                    socket.Receive(new byte[1]); // the echo server never speaks first: parked until killed
                    Ledger.Violate("prim: a receive nobody answers returned.");
                };
            case 12:
                return () =>
                {
                    using var file = new FileStream(Context.BigFile, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
                    var buffer = new byte[64 * 1024];
                    long offset = 0;
                    int n;
                    while ((n = file.Read(buffer)) > 0)
                    {
                        var expected = new byte[n];
                        FileWorkload.FillAt(expected, offset);
                        if (!buffer.AsSpan(0, n).SequenceEqual(expected)) { Ledger.Violate($"prim: the big file read back wrong at {offset}."); return; }
                        offset += n;
                    }
                };
            case 13:
                return () =>
                {
                    if (Random.Next(2) == 0) Task.Delay(ms).Wait();
                    else
                    {
                        var tcs = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
                        ThreadPool.QueueUserWorkItem(_ => { Thread.Sleep(ms); tcs.SetResult(ms); });
                        if (tcs.Task.Result != ms) Ledger.Violate("prim: a Task result changed on its way.");
                    }
                };
            case 14:
                return () =>
                {
                    // A put from a thread-pool thread (primitives are safe from any thread); this greenlet waits for it.
                    long item = ++_nextItem;
                    try { Green.Wait(Task.Run(() => _queue.Put(item, timeout))); }
                    catch (GreenletExit) { _killedPut.Add(item); throw; } // the foreign put may still complete
                    if (!_queuePut.Add(item)) Ledger.Violate($"prim: queue item {item} put twice.");
                };
            case 15:
                return () => Green.Wait(Task.Run(() => { _event.Set(); Thread.Sleep(ms); _event.Clear(); }));
            case 16:
                return () =>
                {
                    // A GreenTimeout (not the call's own timeout) interrupting a semaphore wait.
                    var scope = GreenTimeout.Start(TimeSpan.FromMilliseconds(1 + ms / 3));
                    try { using (_semaphore.Enter()) Thread.Sleep(ms); }
                    catch (GreenTimeoutException e) when (e.Scope == scope) { }
                    finally { scope.Cancel(); }
                };
            default:
                return () =>
                {
                    Thread.Sleep(ms);
                    var scope = GreenTimeout.Start(TimeSpan.FromMilliseconds(1 + ms / 2));
                    try { Thread.Sleep(ms + 20); Ledger.Violate("prim: a timeout scope did not fire."); }
                    catch (GreenTimeoutException e) when (e.Scope == scope) { }
                    finally { scope.Cancel(); }
                    throw new DeliberateException("raised on purpose");
                };
        }
    }

    public override void CheckQuiet()
    {
        _checks++;
        if (_semaphore.Count != SemaphoreStart) Ledger.Violate($"prim: the semaphore's count is {_semaphore.Count}, it started at {SemaphoreStart}.");
        if (_bounded.Count != BoundedStart) Ledger.Violate($"prim: the bounded semaphore's count is {_bounded.Count}, it started at {BoundedStart}.");
        if (_lock.Locked) Ledger.Violate($"prim: the RLock is still held by {_lock.Owner}.");
        var queued = _queue.ToList();
        int uncertain = _killedPut.Count(i => _queueGot.Contains(i) || queued.Contains(i));
        if (_queue.Count != _queuePut.Count + uncertain - _queueGot.Count)
            Ledger.Violate($"prim: the queue holds {_queue.Count} items; {_queuePut.Count} were put (+{uncertain} by killed putters) and {_queueGot.Count} got.");
        while (_queue.TryGet(out var item))
            if (!_queueGot.Add(item)) Ledger.Violate($"prim: queue item {item} was both got and still queued.");
        var lost = _queuePut.Except(_queueGot).Take(5).ToList();
        var phantom = _queueGot.Except(_queuePut).Except(_killedPut).Take(5).ToList();
        if (lost.Count > 0) Ledger.Violate($"prim: queue items put but never got: {string.Join(", ", lost)}.");
        if (phantom.Count > 0) Ledger.Violate($"prim: queue items got but never put (a put that failed delivered): {string.Join(", ", phantom)}.");
        // A getter killed between the hand-over and its resume gives the item back to the channel, which keeps it for
        // the next getter; when its putter was killed too, nobody may get it before this check. Take such items now, so
        // that they count in this phase, where their put is known.
        while (_channel.TryGet(out var given))
            if (!_channelGot.Add(given)) Ledger.Violate($"prim: channel item {given} was both got and given back.");
        lost = _channelPut.Except(_channelGot).Take(5).ToList();
        phantom = _channelGot.Except(_channelPut).Except(_killedPut).Take(5).ToList();
        if (lost.Count > 0) Ledger.Violate($"prim: channel items whose put returned but nobody got them: {string.Join(", ", lost)}.");
        if (phantom.Count > 0) Ledger.Violate($"prim: channel items got although their put failed: {string.Join(", ", phantom)}.");
        if (_channel.HasWaitingGetter || _channel.HasWaitingPutter) Ledger.Violate("prim: the channel still has waiters although every greenlet ended.");
        _queuePut = new(); _queueGot = new(); _channelPut = new(); _channelGot = new(); _killedPut = new();
        _event.Clear();
    }

    public override string Progress() => $"prim {Rounds} rounds";
}
