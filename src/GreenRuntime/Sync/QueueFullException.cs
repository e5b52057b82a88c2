namespace GreenRuntime;

/// <summary>A bounded queue or a channel had no room for an item within the time allowed (gevent's <c>queue.Full</c>).</summary>
public class QueueFullException : InvalidOperationException
{
    /// <summary>Creates the exception with a default message.</summary>
    public QueueFullException() : base("The queue is full.") { }

    /// <summary>Creates the exception with a message.</summary>
    public QueueFullException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public QueueFullException(string message, Exception inner) : base(message, inner) { }
}
