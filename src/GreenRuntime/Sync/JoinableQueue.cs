using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A FIFO <see cref="GreenQueue{T}"/> that counts unfinished work (gevent's <c>JoinableQueue</c>): every item put
/// adds one, every <see cref="TaskDone"/> removes one, and <see cref="Join"/> waits until the count is zero.
/// </summary>
/// <remarks>The count grows when an item enters the queue (also an item handed straight to a waiting getter), not
/// when it is taken: consumers call <see cref="TaskDone"/> after processing each item they took.</remarks>
/// <typeparam name="T">The item type.</typeparam>
/// <example>
/// <code>
/// var q = new JoinableQueue&lt;string&gt;();
/// Green.Spawn(() => { while (true) { Process(q.Get()); q.TaskDone(); } });
/// foreach (var url in urls) q.Put(url);
/// q.Join();   // every url has been processed
/// </code>
/// </example>
[DebuggerDisplay("JoinableQueue Count={Count} Unfinished={UnfinishedTasks} MaxSize={MaxSize}")]
public sealed class JoinableQueue<T> : GreenQueue<T>
{
    private readonly Event _finished = new();
    private Hub? _hub;
    private volatile int _unfinished;

    /// <summary>Creates an empty joinable queue.</summary>
    /// <param name="maxSize">The capacity, or null for unbounded.</param>
    public JoinableQueue(int? maxSize = null) : base(maxSize)
    {
        _hub = Hub.CurrentOrNull;
        if (_hub != null) _finished.Set();
    }

    /// <summary>Items put and not yet marked done with <see cref="TaskDone"/>.</summary>
    public int UnfinishedTasks => _unfinished;

    private protected override void OnItemAdded()
    {
        if (_unfinished++ == 0) _finished.Clear();
    }

    /// <summary>Marks one item taken from the queue as processed. Safe from any thread.</summary>
    /// <exception cref="InvalidOperationException">Called more times than items were put.</exception>
    public void TaskDone()
    {
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread)
        {
            Blocking.Ask(hub, () =>
            {
                TaskDone();
                return true;
            });
            return;
        }
        if (_unfinished == 0)
            throw new InvalidOperationException("TaskDone was called more times than items were put; call it once per item taken with Get.");
        if (--_unfinished == 0) _finished.Set();
    }

    /// <summary>Waits until every item put has been marked done.</summary>
    /// <returns>false if work was still unfinished after <paramref name="timeout"/>.</returns>
    public bool Join(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        var hub = Blocking.Bind(ref _hub, this);
        // The count is the truth (the event may not have been set yet if the queue was created off a hub).
        if (hub.IsOnHubThread ? _unfinished == 0 : Blocking.Ask(hub, () => _unfinished == 0)) return true;
        return _finished.Wait(timeout);
    }

    /// <summary>Waits without blocking a thread until every item put has been marked done; completes with false on timeout.</summary>
    public Task<bool> JoinAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var hub = Blocking.Bind(ref _hub, this);
        if (hub.IsOnHubThread ? _unfinished == 0 : Blocking.Ask(hub, () => _unfinished == 0)) return Task.FromResult(true);
        return _finished.WaitAsync(timeout, cancellationToken);
    }
}
