namespace GreenRuntime.Sync;

/// <summary>The machinery behind <see cref="IGreenWaitable"/>: readiness and a one-shot notification. Hub-only.</summary>
internal interface IWaitSource
{
    bool IsReadyNow { get; }

    /// <summary>Calls <paramref name="onReady"/> (a non-blocking hub callback) when the object becomes ready; dispose to stop.</summary>
    IDisposable Subscribe(Action<object> onReady);
}

internal sealed class Unsubscriber(Action undo) : IDisposable
{
    private Action? _undo = undo;

    public void Dispose()
    {
        var u = _undo;
        _undo = null;
        u?.Invoke();
    }
}
