using GreenRuntime.Sync;

namespace GreenRuntime;

// What the primitives keep per greenlet: its pending Task-form waits (so a kill or a GreenTimeout can end them
// while a stackless greenlet awaits), its GreenletLocal values, and its face as a waitable for Green.IWait.
public partial class Greenlet : IGreenWaitable
{
    private List<(IAsyncWait Wait, GreenTimeout? Scope)>? _asyncWaits => _rare?.AsyncWaits;

    /// <summary>GreenletLocal values of this greenlet, keyed by the GreenletLocal instance. Hub-only.</summary>
    internal Dictionary<object, object?>? Locals
    {
        get => _rare?.Locals;
        set { if (value != null || _rare != null) Rare.Locals = value; }
    }

    /// <summary>Tracks a pending wait of this stackless greenlet, begun inside the GreenTimeout scope
    /// <paramref name="scope"/> of its code's flow (<see cref="GreenTimeout.FlowScope"/> where the wait began).</summary>
    internal void TrackAsyncWait(IAsyncWait wait, GreenTimeout? scope) => (Rare.AsyncWaits ??= new()).Add((wait, scope));

    internal void UntrackAsyncWait(IAsyncWait wait)
    {
        if (_asyncWaits is not { } waits) return;
        for (int i = 0; i < waits.Count; i++)
        {
            if (ReferenceEquals(waits[i].Wait, wait))
            {
                waits.RemoveAt(i);
                return;
            }
        }
    }

    /// <summary>The steps of this stackless greenlet that are blocked now (Hub.Steps.cs), oldest first. Hub-only.</summary>
    internal IEnumerable<Greenlet> BlockedSteps() =>
        _asyncWaits is { Count: > 0 } waits ? waits.Select(w => w.Wait).OfType<Hub.StepWait>().Select(w => w.Step) : [];

    /// <summary>Fails the pending Task-form waits of this greenlet with <paramref name="error"/>: every one for a kill
    /// (<paramref name="timeout"/> null), only those begun inside its scope for a timeout. Returns how many.</summary>
    internal int FailAsyncWaits(Exception error, GreenTimeout? timeout = null)
    {
        if (_asyncWaits is not { Count: > 0 } waits) return 0;
        List<IAsyncWait> failed = new(waits.Count);
        for (int i = 0; i < waits.Count; i++)
        {
            if (timeout is null || timeout.Contains(waits[i].Scope))
            {
                failed.Add(waits[i].Wait);
                waits.RemoveAt(i--);
            }
        }
        foreach (var w in failed) w.Fail(error);
        return failed.Count;
    }

    IDisposable IGreenWaitable.Subscribe(Action onReady)
    {
        Action<Greenlet> link = _ => onReady();
        AddLink(link, LinkKind.All);
        return new Unsubscriber(() => Unlink(link));
    }
}
