using GreenRuntime.Scheduling;
using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>A <see cref="GreenQueue{T}"/> that hands out the most recently added item first (gevent's <c>LifoQueue</c>).</summary>
/// <remarks>Everything but the order is as in <see cref="GreenQueue{T}"/>.</remarks>
/// <typeparam name="T">The item type.</typeparam>
[DebuggerDisplay("LifoQueue Count={Count} MaxSize={MaxSize}")]
public sealed class LifoQueue<T> : GreenQueue<T>
{
    private readonly Deque<T> _stack = new();

    /// <summary>Creates an empty LIFO queue.</summary>
    /// <param name="maxSize">The capacity, or null for unbounded.</param>
    public LifoQueue(int? maxSize = null) : base(maxSize, fifo: false) { }

    private protected override int StoredCount => _stack.Count;
    private protected override void StoreItem(T item) => _stack.PushBack(item);
    private protected override T TakeItem() => _stack.PopBack();
    private protected override T PeekItem() => _stack.PeekBack();
    private protected override void ReturnItem(T item) => _stack.PushBack(item);
    private protected override IEnumerable<T> Snapshot() => _stack.Snapshot().Reverse();
}
