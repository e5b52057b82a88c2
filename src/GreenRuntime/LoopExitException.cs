namespace GreenRuntime;

/// <summary>
/// Raised in the main greenlet when it blocks and nothing can ever wake it: no greenlet is ready, no timer
/// is pending and no cooperative operation is outstanding.
/// </summary>
public class LoopExitException : Exception
{
    /// <summary>Creates the exception with gevent's message.</summary>
    public LoopExitException() : base("This operation would block forever.") { }

    /// <summary>Creates the exception with a message.</summary>
    public LoopExitException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public LoopExitException(string message, Exception inner) : base(message, inner) { }
}
