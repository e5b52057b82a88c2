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
    // Set exactly while _unfinished is zero. Both change under the queue's lock (the Event's own lock is taken inside
    // it: queue lock first, never the other way round).
    private readonly Event _finished = new();
    private volatile int _unfinished;

    /// <summary>Creates an empty joinable queue.</summary>
    /// <param name="maxSize">The capacity, or null for unbounded.</param>
    public JoinableQueue(int? maxSize = null) : base(maxSize) => _finished.Set();

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
        QueueLock.Enter();
        bool over = _unfinished == 0;
        if (!over && --_unfinished == 0) _finished.Set();
        QueueLock.Exit();
        if (over)
            throw new InvalidOperationException("TaskDone was called more times than items were put; call it once per item taken with Get.");
    }

    /// <summary>Waits until every item put has been marked done.</summary>
    /// <returns>false if work was still unfinished after <paramref name="timeout"/>.</returns>
    public bool Join(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (_unfinished == 0) return true;
        return _finished.Wait(timeout);
    }

    /// <summary>Waits without blocking a thread until every item put has been marked done; completes with false on timeout.</summary>
    public Task<bool> JoinAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        if (_unfinished == 0) return Task.FromResult(true);
        return _finished.WaitAsync(timeout, cancellationToken);
    }
}
