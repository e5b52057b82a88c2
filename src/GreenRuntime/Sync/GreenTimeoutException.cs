namespace GreenRuntime;

/// <summary>
/// Raised in a greenlet by a <see cref="GreenTimeout"/> that expired (gevent's <c>Timeout</c> exception).
/// <see cref="Scope"/> tells which timeout it was, so nested timeouts can be told apart.
/// </summary>
public class GreenTimeoutException : TimeoutException
{
    /// <summary>Creates the exception with a default message.</summary>
    public GreenTimeoutException() : base("The greenlet timed out.") { }

    /// <summary>Creates the exception with a message.</summary>
    public GreenTimeoutException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public GreenTimeoutException(string message, Exception inner) : base(message, inner) { }

    internal GreenTimeoutException(GreenTimeout scope) : base($"Timed out after {scope.Duration}.") => Scope = scope;

    /// <summary>The timeout that raised it; null if it was created by user code.</summary>
    public GreenTimeout? Scope { get; }
}
