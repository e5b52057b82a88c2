using System.Net.Sockets;

namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// Stackless (async) greenlets doing the same through the async APIs: SleepAsync, queue and semaphore and lock
/// and event waits, async file writes and reads, and an async echo client — some killed at random. Invariants:
/// verified bytes, and the primitives' counts come back to their start when quiet.
/// </summary>
internal sealed class StacklessWorkload(SoakContext context) : Workload(context, "async")
{
    private const int SemaphoreStart = 2;
    private readonly GreenSemaphore _semaphore = new(SemaphoreStart);
    private readonly RLock _lock = new();
    private readonly GreenQueue<int> _queue = new(4);
    private readonly Event _event = new();
    private int _queueNet;
    private long _verifiedBytes;

    private static bool Expected(Exception e) =>
        e is TimeoutException or QueueFullException or QueueEmptyException or DeliberateException or OperationCanceledException;

    protected override IReadOnlyList<Greenlet> Round()
    {
        var batch = new List<Greenlet>();
        int count = Random.Next(5, 15);
        for (int i = 0; i < count; i++)
        {
            int action = Random.Next(9);
            bool killed = Random.Next(100) < 25 && action != 7; // the echo client is killed through its own test
            var g = Ledger.SpawnAsync($"async.{ActionName(action)}", Body(action), killed || action == 7 ? e => Expected(e) || EchoWorkload.IsNetworkError(e) : Expected);
            batch.Add(g);
            if (killed) batch.Add(KillLater(g, 40));
        }
        return batch;
    }

    private static string ActionName(int action) => action switch
    {
        0 => "sleep", 1 => "semaphore", 2 => "rlock", 3 => "queue.put", 4 => "queue.get", 5 => "event",
        6 => "file", 7 => "echo", _ => "raise",
    };

    private Func<Task> Body(int action)
    {
        int ms = Random.Next(0, 30);
        var timeout = TimeSpan.FromMilliseconds(Random.Next(1, 60));
        switch (action)
        {
            case 0: return async () => { await Green.SleepAsync(TimeSpan.FromMilliseconds(ms)); await Task.Delay(ms); };
            case 1:
                return async () =>
                {
                    if (!await _semaphore.AcquireAsync(timeout)) return;
                    try { await Green.SleepAsync(TimeSpan.FromMilliseconds(ms)); }
                    finally { _semaphore.Release(); }
                };
            case 2:
                return async () =>
                {
                    if (!await _lock.AcquireAsync(timeout)) return;
                    try { await Green.SleepAsync(TimeSpan.FromMilliseconds(ms)); }
                    finally { _lock.Release(); }
                };
            case 3: return async () => { await _queue.PutAsync(1, timeout); _queueNet++; };
            case 4: return async () => { await _queue.GetAsync(timeout); _queueNet--; };
            case 5:
                return async () =>
                {
                    if (ms % 2 == 0) { _event.Set(); await Green.SleepAsync(TimeSpan.FromMilliseconds(ms)); _event.Clear(); }
                    else await _event.WaitAsync(timeout);
                };
            case 6:
                return async () =>
                {
                    var content = Payload.Message(Random.Next(1, 512 * 1024), (uint)Random.Next());
                    var path = Path.Combine(Context.Scratch, $"a{Random.Next():x8}.bin");
                    try
                    {
                        await File.WriteAllBytesAsync(path, content);
                        var read = await File.ReadAllBytesAsync(path);
                        if (Payload.Verify(read) is { } problem) Ledger.Violate($"async file: {problem}.");
                        else _verifiedBytes += read.Length;
                    }
                    finally { File.Delete(path); }
                };
            case 7:
                return async () =>
                {
                    var message = Payload.Message(Payload.RandomSize(Random), (uint)Random.Next());
                    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    await socket.ConnectAsync(Context.EchoEndPoint);
                    var send = socket.SendAsync(message, SocketFlags.None);
                    var received = new byte[message.Length];
                    int at = 0;
                    while (at < received.Length)
                    {
                        int n = await socket.ReceiveAsync(received.AsMemory(at), SocketFlags.None);
                        if (n == 0) { Ledger.Violate("async echo: the server closed the connection early."); return; }
                        at += n;
                    }
                    await send;
                    if (!received.AsSpan().SequenceEqual(message)) Ledger.Violate("async echo: a message came back damaged.");
                    else _verifiedBytes += received.Length;
                };
            default:
                return async () =>
                {
                    await Green.SleepAsync(TimeSpan.FromMilliseconds(ms));
                    throw new DeliberateException("raised on purpose");
                };
        }
    }

    public override void CheckQuiet()
    {
        if (_semaphore.Count != SemaphoreStart) Ledger.Violate($"async: the semaphore's count is {_semaphore.Count}, it started at {SemaphoreStart}.");
        if (_lock.Locked) Ledger.Violate($"async: the RLock is still held by {_lock.Owner}.");
        if (_queue.Count != _queueNet) Ledger.Violate($"async: the queue holds {_queue.Count} items; puts minus gets is {_queueNet}.");
        while (_queue.TryGet(out _)) { }
        _queueNet = 0;
        _event.Clear();
    }

    public override string Progress() => $"async {_verifiedBytes / 1048576.0:0.0} MiB ok";
}
