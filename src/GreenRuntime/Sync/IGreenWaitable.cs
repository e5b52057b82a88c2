namespace GreenRuntime;

/// <summary>
/// Something <see cref="Green.IWait{T}"/> can wait for: a <see cref="Greenlet"/>, an <see cref="Event"/> or an
/// <see cref="AsyncResult{T}"/>. Implemented only by this library's types.
/// </summary>
public interface IGreenWaitable
{
    /// <summary>Whether waiting would return at once: the greenlet is dead, the event is set, the result is ready.</summary>
    bool Ready { get; }
}
