namespace GreenRuntime.Sync;

/// <summary>The machinery behind <see cref="IGreenWaitable"/>: readiness and a one-shot notification. Hub-only.</summary>
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
