namespace GreenRuntime;

/// <summary>
/// The default exception <see cref="Greenlet.Kill"/> raises in a greenlet. A greenlet that ends with it
/// counts as successful: its <see cref="Greenlet.Value"/> is the exception and <see cref="Greenlet.Exception"/> is null.
/// That holds for the greenlet's own kill and for one the greenlet throws itself (as gevent's <c>raise GreenletExit</c>
/// ends a greenlet quietly), not for another greenlet's kill that reaches it: a greenlet that ends with that has failed.
/// </summary>
public class GreenletExit : Exception
{
    /// <summary>Creates the exception with a default message.</summary>
    public GreenletExit() : base("The greenlet was killed.") { }

    /// <summary>Creates the exception with a message.</summary>
    public GreenletExit(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public GreenletExit(string message, Exception inner) : base(message, inner) { }

    /// <summary>The greenlet this exception first killed (null: no kill delivered it). Another greenlet that ends with
    /// it (carried out of a shared task, rethrown from a catch) failed with it: that was not its own exit.</summary>
    internal Greenlet? Killed;
}
