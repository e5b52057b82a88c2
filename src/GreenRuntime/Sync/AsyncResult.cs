using System.Diagnostics;
using System.Runtime.ExceptionServices;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A one-value event, like gevent's <c>AsyncResult</c>: a producer calls <see cref="Set"/> or
/// <see cref="SetException"/>, consumers <see cref="Get"/> the value (or the exception) once it is there.
/// </summary>
/// <remarks>
/// <para>As in gevent it may be set more than once: the last <see cref="Set"/>/<see cref="SetException"/> wins for
/// later readers, while the greenlets woken by an earlier one see the outcome of that moment.</para>
/// <para>It is a link target: <c>greenlet.Link(result.SetFrom)</c> copies the greenlet's outcome into it (a
/// greenlet killed with <see cref="GreenletExit"/> sets that exception).</para>
/// <para>Every method is safe from any thread, and greenlets of several hubs may wait on one result (each is woken
/// through its own hub).</para>
/// </remarks>
/// <typeparam name="T">The value type.</typeparam>
[DebuggerDisplay("AsyncResult Ready={_ready} Waiters={_waiters.Count}")]
public sealed class AsyncResult<T> : IGreenWaitable
{
    private readonly SyncLock _lock = new();
    private readonly WaiterList<bool> _waiters = new();
    private volatile bool _ready;
    private T _value = default!;
    private ExceptionDispatchInfo? _error;

    /// <summary>Creates an empty result. It may be used from any thread and any hub.</summary>
    public AsyncResult() { }

    /// <summary>Whether a value or an exception has been set.</summary>
    public bool Ready => _ready;

    /// <summary>Whether a value (not an exception) has been set.</summary>
    public bool Successful => _ready && _error == null;

    /// <summary>The value if <see cref="Successful"/>; default otherwise.</summary>
    public T Value
    {
        get
        {
            if (!_ready) return default!;
            var (value, error) = ReadPair();
            return error == null ? value : default!;
        }
    }

    /// <summary>The exception if one was set; null otherwise.</summary>
    public Exception? Exception => _error?.SourceException;

    /// <summary>Stores <paramref name="value"/> and wakes every waiter. Safe from any thread.</summary>
    public void Set(T value) => Complete(value, null);

    /// <summary>Stores <paramref name="exception"/>: <see cref="Get"/> rethrows it. Safe from any thread.</summary>
    public void SetException(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        Complete(default!, ExceptionDispatchInfo.Capture(exception));
    }

    /// <summary>Copies a finished greenlet's outcome: its value, or its exception. Meant as a link target: <c>g.Link(result.SetFrom)</c>.</summary>
    /// <exception cref="InvalidOperationException">The greenlet has not finished, or its value is not a <typeparamref name="T"/>.</exception>
    public void SetFrom(Greenlet greenlet)
    {
        ArgumentNullException.ThrowIfNull(greenlet);
        if (!greenlet.Dead) throw new InvalidOperationException($"{greenlet} has not finished; link this method to it (greenlet.Link(result.SetFrom)) instead of calling it directly.");
        if (greenlet.Exception != null) SetException(greenlet.Exception);
        else if (greenlet.Value is GreenletExit exit) SetException(exit);
        else if (greenlet.Value is T value) Set(value);
        else if (greenlet.Value == null && default(T) == null) Set(default!);
        else throw new InvalidOperationException($"{greenlet} produced a {greenlet.Value?.GetType().Name ?? "null"}, not a {typeof(T).Name}.");
    }

    private void Complete(T value, ExceptionDispatchInfo? error)
    {
        _lock.Enter();
        _value = value;
        _error = error;
        _ready = true; // volatile: a reader that sees it sees the value and the error written before it
        _waiters.ServeAll(true);
        _lock.Exit();
    }

    /// <summary>Waits until the result is ready or the timeout elapses. Does not throw the stored exception.</summary>
    /// <returns>Whether the result is ready.</returns>
    public bool Wait(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (_ready) return true;
        if (timeout == TimeSpan.Zero) return false;
        var hub = Blocking.WaitingHub();
        _lock.Enter();
        if (_ready)
        {
            _lock.Exit();
            return true;
        }
        Blocking.Park(hub, _lock, _waiters, WaitReason.Event, timeout);
        return _ready;
    }

    /// <summary>Waits for the result and returns the value, or rethrows the stored exception with its original stack.</summary>
    /// <exception cref="TimeoutException">Not ready within <paramref name="timeout"/>.</exception>
    public T Get(TimeSpan? timeout = null)
    {
        if (!Wait(timeout)) throw new TimeoutException($"The result was not ready within {timeout}.");
        return Result();
    }

    /// <summary>Returns the value without waiting, if ready.</summary>
    /// <returns>false if not ready yet.</returns>
    /// <exception cref="Exception">Ready with an exception: it is rethrown (not ready is the only "false").</exception>
    public bool TryGet(out T value)
    {
        if (!_ready)
        {
            value = default!;
            return false;
        }
        value = Result();
        return true;
    }

    private T Result()
    {
        var (value, error) = ReadPair();
        error?.Throw();
        return value;
    }

    /// <summary>The value and the error as one pair: Set may be called again from another thread (the last one wins for
    /// later readers), and a value larger than a word could otherwise be read half-written.</summary>
    private (T Value, ExceptionDispatchInfo? Error) ReadPair()
    {
        _lock.Enter();
        var pair = (_value, _error);
        _lock.Exit();
        return pair;
    }

    /// <summary>Waits without blocking a thread; completes with whether the result is ready.</summary>
    public Task<bool> WaitAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => Blocking.WaitFlagAsync(this, _lock, _waiters, static self => self._ready, timeout, cancellationToken);

    /// <summary>Waits without blocking a thread and returns the value (or rethrows the stored exception).</summary>
    /// <exception cref="TimeoutException">Not ready within <paramref name="timeout"/>.</exception>
    public async Task<T> GetAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        if (!await WaitAsync(timeout, cancellationToken)) throw new TimeoutException($"The result was not ready within {timeout}.");
        return Result();
    }

    IDisposable IGreenWaitable.Subscribe(Action onReady) =>
        Blocking.SubscribeFlag(this, _lock, _waiters, static self => self._ready, onReady);

    /// <summary>Describes the result for logs.</summary>
    public override string ToString() => $"<AsyncResult {(!_ready ? "pending" : _error == null ? "value" : "exception")}>";
}
