namespace GreenRuntime.Sync;

/// <summary>A growable ring buffer of queue items: FIFO and LIFO storage, and push-front to return an item. Hub-only.</summary>
internal sealed class ItemDeque<T>
{
    private T[] _items = new T[8];
    private int _head, _count;

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

    public T PeekFront() => _count > 0 ? _items[_head] : throw new InvalidOperationException("Internal error: peek at an empty deque.");

    public T PeekBack() => _count > 0 ? _items[(_head + _count - 1) & (_items.Length - 1)] : throw new InvalidOperationException("Internal error: peek at an empty deque.");

    public T PopFront()
    {
        var item = PeekFront();
        _items[_head] = default!;
        _head = (_head + 1) & (_items.Length - 1);
        _count--;
        return item;
    }

    public T PopBack()
    {
        var item = PeekBack();
        _items[(_head + _count - 1) & (_items.Length - 1)] = default!;
        _count--;
        return item;
    }

    public IEnumerable<T> Snapshot()
    {
        for (int i = 0; i < _count; i++) yield return _items[(_head + i) & (_items.Length - 1)];
    }

    private void Grow()
    {
        var bigger = new T[_items.Length * 2];
        for (int i = 0; i < _count; i++) bigger[i] = _items[(_head + i) & (_items.Length - 1)];
        _items = bigger;
        _head = 0;
    }
}
