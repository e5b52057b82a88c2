namespace GreenRuntime;

/// <summary>A queue or channel had no item to take within the time allowed (gevent's <c>queue.Empty</c>).</summary>
public class QueueEmptyException : InvalidOperationException
{
    /// <summary>Creates the exception with a default message.</summary>
    public QueueEmptyException() : base("The queue is empty.") { }

    /// <summary>Creates the exception with a message.</summary>
    public QueueEmptyException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public QueueEmptyException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Whether the queue is closed and empty: no item will ever come.</summary>
    public bool IsClosed { get; init; }
}
