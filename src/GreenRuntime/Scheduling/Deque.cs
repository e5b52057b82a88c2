namespace GreenRuntime.Scheduling;

/// <summary>A growable ring buffer used as the hub's ready queue: FIFO at the back, plus push-front for
/// <c>Switch</c>, which must run its target before anything already queued.</summary>
internal sealed class Deque<T>
{
    private T[] _items = new T[64];
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
