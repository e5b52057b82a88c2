namespace GreenRuntime.Scheduling;

/// <summary>
/// A one-shot callback the hub runs on its baton at (or after) a monotonic deadline. Timers fire in
/// deadline order, ties in creation order. A cancelled timer stays in the heap and is discarded when it
/// reaches the top, or by a sweep once most of the heap is cancelled (TimerHeap.cs), so cancelling is O(1)
/// amortized and costs nothing at fire time but a pop. Cancelling (and firing)
/// drops the callback and its state at once: a long timeout cancelled early (an I/O or keep-alive timeout) must
/// not keep what it refers to alive until its deadline.
/// </summary>
/// <remarks>Timer callbacks run on the hub and must not block (parking in one throws).</remarks>
internal sealed class HubTimer
{
    internal readonly long Deadline;
    internal readonly long Sequence;
    private Action<object?>? _callback;
    private object? _state;

    internal HubTimer(long deadline, long sequence, Action<object?> callback, object? state)
    {
        Deadline = deadline;
        Sequence = sequence;
        _callback = callback;
        _state = state;
    }

    public bool IsCancelled => _callback == null;

    /// <summary>The state the callback will receive (read by run-info to tell what a parked greenlet waits for).</summary>
    internal object? State => _state;

    /// <summary>Stops the timer from firing. Hub-only; idempotent; harmless after it fired.</summary>
    public void Cancel()
    {
        if (_callback == null) return; // fired or cancelled already: no longer counted by the heap
        _callback = null;
        _state = null;
        // Hub-only, so the calling thread's hub is the timer's: it counts the dead entry for its next sweep.
        Hub.CurrentOrNull?.NoteTimerCancelled();
    }

    internal void Fire()
    {
        var cb = _callback;
        var state = _state;
        _callback = null;
        _state = null;
        cb?.Invoke(state);
    }
}
