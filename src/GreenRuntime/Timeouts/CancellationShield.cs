namespace GreenRuntime;

/// <summary>
/// Holds back kills and expired timeouts of the current greenlet while it is open, so cleanup code can block
/// (trio's shielded cancel scope). Get one from <see cref="Green.Shield"/> and dispose it: <c>using (Green.Shield()) { Flush(); }</c>.
/// </summary>
/// <remarks>
/// <para>Cancellation is level-triggered (docs/core.md, "Cancellation"): after a kill, every blocking point raises it
/// again, which also aborts cleanup that blocks (a flush, a graceful close, unregistering a wait). Inside a shield the
/// greenlet's blocking points behave as if it had not been killed and no timeout had expired: a kill or timeout that
/// lands meanwhile is recorded, not delivered, and the first blocking point after the last shield closes raises it.</para>
/// <para>Shields nest. A shield opened off a greenlet (no hub, or a hub callback) does nothing. Keep shielded code
/// short and bounded: a shielded greenlet cannot be killed.</para>
/// </remarks>
public readonly struct CancellationShield : IDisposable
{
    private readonly Greenlet? _greenlet;

    internal CancellationShield(Greenlet greenlet)
    {
        _greenlet = greenlet;
        greenlet.ShieldDepth++;
    }

    /// <summary>Closes the shield; a kill or expired timeout held back is raised at the next blocking point after the last one closes.</summary>
    public void Dispose()
    {
        if (_greenlet is { } g && g.ShieldDepth > 0) g.ShieldDepth--;
    }
}

public static partial class Green
{
    /// <summary>Opens a <see cref="CancellationShield"/> for the current greenlet: until it is disposed, kills and expired
    /// timeouts are held back, so cleanup code may block.</summary>
    /// <example><code>
    /// catch (GreenletExit)
    /// {
    ///     using (Green.Shield()) connection.CloseGracefully();   // may block; the kill is raised again afterwards
    ///     throw;
    /// }
    /// </code></example>
    public static CancellationShield Shield()
    {
        var hub = Hub.CurrentOrNull;
        if (hub == null || !hub.CanBlockHere) return default;
        var g = hub.CurrentGreenlet;
        return g == hub.HubGreenlet ? default : new CancellationShield(g);
    }
}
