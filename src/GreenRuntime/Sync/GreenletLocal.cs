using System.Diagnostics;

namespace GreenRuntime;

/// <summary>
/// A value per greenlet, like gevent's <c>local</c>: each greenlet (stackful or stackless, and the main greenlet)
/// sees its own value; a greenlet does not see the value of the greenlet that spawned it.
/// </summary>
/// <remarks>
/// <para>The value belongs to <see cref="Green.Current"/>: a stackless greenlet keeps it across awaits as long as its
/// continuations run on the hub (the default; after <c>ConfigureAwait(false)</c> the code runs on a pool thread,
/// which is not a greenlet and gets the per-thread value described next). On a thread without a hub the value is
/// per thread. Inside link and timer callbacks it is the hub greenlet's value.</para>
/// <para>Values are kept by the greenlet object: they go away with it.</para>
/// </remarks>
/// <typeparam name="T">The value type.</typeparam>
/// <example>
/// <code>
/// var requestId = new GreenletLocal&lt;int&gt;();
/// Green.Spawn(() => { requestId.Value = 1; Green.Sleep(10); Debug.Assert(requestId.Value == 1); });
/// Green.Spawn(() => { requestId.Value = 2; Green.Sleep(10); Debug.Assert(requestId.Value == 2); });
/// </code>
/// </example>
[DebuggerDisplay("GreenletLocal<{typeof(T).Name,nq}>")]
public sealed class GreenletLocal<T>
{
    private readonly Func<T>? _valueFactory;
    private readonly ThreadLocal<(bool Set, T Value)> _offHub = new();

    /// <summary>Creates a local whose value starts as <paramref name="valueFactory"/>'s result (called once per greenlet, on first read), or default.</summary>
    public GreenletLocal(Func<T>? valueFactory = null) => _valueFactory = valueFactory;

    /// <summary>The current greenlet's value (created by the factory on first read).</summary>
    public T Value
    {
        get
        {
            if (TryGetValue(out var value)) return value;
            value = _valueFactory != null ? _valueFactory() : default!;
            // The factory may have blocked and set it meanwhile; the first value stored wins.
            if (TryGetValue(out var raced)) return raced;
            Store(value);
            return value;
        }
        set => Store(value);
    }

    /// <summary>Whether the current greenlet has a value (set, or created by the factory).</summary>
    public bool IsValueCreated => TryGetValue(out _);

    /// <summary>Gets the current greenlet's value without creating it.</summary>
    public bool TryGetValue(out T value)
    {
        var g = Hub.CurrentOrNull?.CurrentGreenlet;
        if (g == null)
        {
            var slot = _offHub.Value;
            value = slot.Value;
            return slot.Set;
        }
        if (g.Locals != null && g.Locals.TryGetValue(this, out var boxed))
        {
            value = (T)boxed!;
            return true;
        }
        value = default!;
        return false;
    }

    /// <summary>Forgets the current greenlet's value: the next read creates it again.</summary>
    public void Reset()
    {
        var g = Hub.CurrentOrNull?.CurrentGreenlet;
        if (g == null) _offHub.Value = default;
        else g.Locals?.Remove(this);
    }

    private void Store(T value)
    {
        var g = Hub.CurrentOrNull?.CurrentGreenlet;
        if (g == null) _offHub.Value = (true, value);
        else (g.Locals ??= new())[this] = value;
    }
}
