using GreenRuntime.Sync;

namespace GreenRuntime;

// What the primitives keep per greenlet: its pending Task-form waits (so a kill or a GreenTimeout can end them
// while a stackless greenlet awaits), its GreenletLocal values, and its face as a waitable for Green.IWait.
public partial class Greenlet : IGreenWaitable
{
    private List<IAsyncWait>? _asyncWaits => _rare?.AsyncWaits;

    /// <summary>GreenletLocal values of this greenlet, keyed by the GreenletLocal instance. Hub-only.</summary>
    internal Dictionary<object, object?>? Locals
    {
        get => _rare?.Locals;
        set { if (value != null || _rare != null) Rare.Locals = value; }
    }

    internal void TrackAsyncWait(IAsyncWait wait) => (Rare.AsyncWaits ??= new()).Add(wait);

    internal void UntrackAsyncWait(IAsyncWait wait) => _asyncWaits?.Remove(wait);

    /// <summary>The steps of this stackless greenlet that are blocked now (Hub.Steps.cs), oldest first. Hub-only.</summary>
    internal IEnumerable<Greenlet> BlockedSteps() =>
        _asyncWaits is { Count: > 0 } waits ? waits.OfType<Hub.StepWait>().Select(w => w.Step) : [];

    /// <summary>Fails every pending Task-form wait of this greenlet with <paramref name="error"/>; returns how many.</summary>
    internal int FailAsyncWaits(Exception error)
    {
        if (_asyncWaits is not { Count: > 0 } waits) return 0;
        var all = waits.ToArray();
        waits.Clear();
        foreach (var w in all) w.Fail(error);
        return all.Length;
    }

    IDisposable IGreenWaitable.Subscribe(Action onReady)
    {
        Action<Greenlet> link = _ => onReady();
        AddLink(link, LinkKind.All);
        return new Unsubscriber(() => Unlink(link));
    }
}
