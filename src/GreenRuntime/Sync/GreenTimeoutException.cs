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

    /// <summary>
    /// The exception <paramref name="scope"/> raised, if <paramref name="e"/> is it or wraps it. Blocking I/O
    /// wraps what it cannot handle: a timeout raised inside a patched socket receive leaves
    /// <c>NetworkStream.Read</c> as an <see cref="System.IO.IOException"/>, and a database driver wraps that once
    /// more (Npgsql: NpgsqlException ← IOException ← this). Those layers cannot know it was a timeout; the scope
    /// that raised it can, by reference. And once raised, the timeout is raised again at every later blocking point
    /// in its scope, so clean-up code that swallows it there and throws an exception of its own (not wrapping it)
    /// leaves the scope with that exception: it too is the timeout's (Greenlet.Raising). So is a cancellation the body
    /// ends with after the timeout expired and before it was raised (Greenlet.CarriesCancellation).
    /// </summary>
    internal static GreenTimeoutException? RaisedBy(Exception e, GreenTimeout scope)
    {
        // Bounded: an exception chain is finite, but a pathological wrapper could nest very deeply.
        for (var (x, depth) = (e, 0); x != null && depth < 32; x = x.InnerException, depth++)
        {
            if (x is GreenTimeoutException t && t.Scope == scope)
                return t;
            if (x is GreenTimeoutException { Scope: not null } or GreenletExit)
                return null; // an enclosing timeout's, or a kill: it goes on through this scope
        }
        return scope.Raised || (scope.Expired && Greenlet.CarriesCancellation(e)) ? scope.Exception as GreenTimeoutException : null;
    }
}
