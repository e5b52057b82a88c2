namespace GreenRuntime.Scheduling;

/// <summary>A growable ring buffer: the hub's ready queue (FIFO at the back, plus push-front for <c>Switch</c>,
/// which must run its target before anything already queued) and the storage of the FIFO and LIFO queues
/// (push-front to give an item back). Single-threaded: hub-only.</summary>
internal sealed class Deque<T>
{
    private T[] _items;
    private int _head, _count;

    /// <param name="capacity">initial capacity, a power of two</param>
    public Deque(int capacity = 8)
    {
        if (capacity <= 0 || (capacity & (capacity - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The capacity must be a positive power of two.");
        _items = new T[capacity];
    }

    public int Count => _count;

    public void PushBack(T item)
    {
        if (_count == _items.Length) Grow();
        _items[(_head + _count) & (_items.Length - 1)] = item;
        _count++;
    }

    public void PushFront(T item)
    {
        if (_count == _items.Length) Grow();
        _head = (_head - 1) & (_items.Length - 1);
        _items[_head] = item;
        _count++;
    }

    public bool TryPopFront(out T item)
    {
        if (_count == 0)
        {
            item = default!;
            return false;
        }
        item = _items[_head];
        _items[_head] = default!;
        _head = (_head + 1) & (_items.Length - 1);
        _count--;
        return true;
    }

    public T PeekFront() => _count > 0 ? _items[_head] : throw new InvalidOperationException("Internal error: peek at an empty deque.");

    public T PeekBack() => _count > 0 ? _items[(_head + _count - 1) & (_items.Length - 1)] : throw new InvalidOperationException("Internal error: peek at an empty deque.");

    public T PopFront() => TryPopFront(out var item) ? item : throw new InvalidOperationException("Internal error: pop from an empty deque.");

    public T PopBack()
    {
        var item = PeekBack();
        _items[(_head + _count - 1) & (_items.Length - 1)] = default!;
        _count--;
        return item;
    }

    /// <summary>The index from the front of the first item that <paramref name="match"/> accepts, or -1.</summary>
    public int FindIndex<TArg>(Func<T, TArg, bool> match, TArg arg)
    {
        for (int i = 0; i < _count; i++)
        {
            if (match(_items[(_head + i) & (_items.Length - 1)], arg)) return i;
        }
        return -1;
    }

    /// <summary>Removes the item <paramref name="index"/> places from the front; the others keep their order.</summary>
    public void RemoveAt(int index)
    {
        if ((uint)index >= (uint)_count) throw new ArgumentOutOfRangeException(nameof(index), index, "Internal error: no such item in the deque.");
        int mask = _items.Length - 1;
        for (int i = index; i > 0; i--) _items[(_head + i) & mask] = _items[(_head + i - 1) & mask];
        _items[_head] = default!;
        _head = (_head + 1) & mask;
        _count--;
    }

    public IEnumerable<T> Snapshot()
    {
        var copy = new T[_count];
        for (int i = 0; i < _count; i++) copy[i] = _items[(_head + i) & (_items.Length - 1)];
        return copy;
    }

    private void Grow()
    {
        var bigger = new T[_items.Length * 2];
        for (int i = 0; i < _count; i++) bigger[i] = _items[(_head + i) & (_items.Length - 1)];
        _items = bigger;
        _head = 0;
    }
}
