namespace GreenRuntime.LowLevel;

/// <summary>The scope <see cref="Parking.SuppressCooperation"/> returns; dispose it (with <c>using</c>) on the same thread to end it.</summary>
public readonly struct SuppressedCooperation : IDisposable
{
    private readonly bool _open;

    internal SuppressedCooperation(bool open) => _open = open;

    /// <summary>Ends the scope: cooperative operations park again on this thread.</summary>
    /// <exception cref="InvalidOperationException">Disposed twice or on another thread (the count of open scopes on this thread is already zero).</exception>
    public void Dispose()
    {
        if (_open) Parking.EndSuppression();
    }
}
