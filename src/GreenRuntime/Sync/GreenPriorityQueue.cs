using System.Diagnostics;

namespace GreenRuntime;

/// <summary>A <see cref="GreenQueue{T}"/> that hands out the lowest item first (gevent's <c>PriorityQueue</c>).</summary>
/// <remarks>Items that compare equal come out in no promised order. Everything else (blocking, timeouts, foreign
/// threads, closing) is as in <see cref="GreenQueue{T}"/>.</remarks>
/// <typeparam name="T">The item type.</typeparam>
[DebuggerDisplay("GreenPriorityQueue Count={Count} MaxSize={MaxSize}")]
public sealed class GreenPriorityQueue<T> : GreenQueue<T>
{
    private readonly PriorityQueue<T, T> _heap;

    /// <summary>Creates an empty priority queue.</summary>
    /// <param name="maxSize">The capacity, or null for unbounded.</param>
    /// <param name="comparer">Orders the items; default: <see cref="Comparer{T}.Default"/>.</param>
    public GreenPriorityQueue(int? maxSize = null, IComparer<T>? comparer = null) : base(maxSize, fifo: false) =>
        _heap = new PriorityQueue<T, T>(comparer ?? Comparer<T>.Default);

    private protected override int StoredCount => _heap.Count;
    private protected override void StoreItem(T item)
    {
        // Compared with the first item before the heap changes: a comparer that throws (items that are not comparable)
        // throws here, leaving the heap as it was, rather than halfway through the heap's sift.
        if (_heap.Count > 0) _heap.Comparer.Compare(item, _heap.Peek());
        _heap.Enqueue(item, item);
    }
    private protected override T TakeItem() => _heap.Dequeue();
    private protected override T PeekItem() => _heap.Peek();
    private protected override void ReturnItem(T item) => _heap.Enqueue(item, item);
    private protected override IEnumerable<T> Snapshot() => _heap.UnorderedItems.Select(e => e.Element).Order(_heap.Comparer);
}
