namespace GreenRuntime;

/// <summary>
/// The default exception <see cref="Greenlet.Kill"/> raises in a greenlet. A greenlet that ends with it
/// counts as successful: its <see cref="Greenlet.Value"/> is the exception and <see cref="Greenlet.Exception"/> is null.
/// </summary>
public class GreenletExit : Exception
{
    /// <summary>Creates the exception with a default message.</summary>
    public GreenletExit() : base("The greenlet was killed.") { }

    /// <summary>Creates the exception with a message.</summary>
    public GreenletExit(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public GreenletExit(string message, Exception inner) : base(message, inner) { }
}
