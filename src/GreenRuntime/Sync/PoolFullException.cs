namespace GreenRuntime;

/// <summary>A <see cref="GreenPool"/> had no free slot and the caller asked not to wait (gevent's <c>PoolFull</c>).</summary>
public class PoolFullException : InvalidOperationException
{
    /// <summary>Creates the exception with a default message.</summary>
    public PoolFullException() : base("The pool is full.") { }

    /// <summary>Creates the exception with a message.</summary>
    public PoolFullException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public PoolFullException(string message, Exception inner) : base(message, inner) { }
}
