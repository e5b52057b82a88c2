namespace GreenRuntime;

/// <summary>
/// Something <see cref="Green.IWait{T}"/> can wait for: a <see cref="Greenlet"/>, an <see cref="Event"/>, an
/// <see cref="AsyncResult{T}"/>, or a type of yours (gevent's <c>iwait</c> accepts anything with <c>rawlink</c>/<c>unlink</c>).
/// </summary>
/// <example>
/// <code>
/// sealed class Door : IGreenWaitable
/// {
///     private readonly Event _open = new();
///     public void Open() => _open.Set();
///     public bool Ready => _open.IsSet;
///     public IDisposable Subscribe(Action onReady) => ((IGreenWaitable)_open).Subscribe(onReady);
/// }
/// </code>
/// </example>
public interface IGreenWaitable
{
    /// <summary>Whether waiting would return at once: the greenlet is dead, the event is set, the result is ready.</summary>
    bool Ready { get; }

    /// <summary>
    /// Arranges for <paramref name="onReady"/> to be called once when the object becomes ready; disposing the result
    /// withdraws it. Called by <see cref="Green.IWait{T}"/> on its hub, only while <see cref="Ready"/> is false.
    /// </summary>
    /// <remarks><paramref name="onReady"/> may be called from any thread (IWait marshals it to its hub), more than once
    /// (later calls are ignored), and must not be called after the subscription was disposed.</remarks>
    IDisposable Subscribe(Action onReady);
}
