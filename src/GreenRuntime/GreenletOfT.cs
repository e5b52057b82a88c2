using System.Runtime.ExceptionServices;

namespace GreenRuntime;

/// <summary>A greenlet whose body returns a <typeparamref name="T"/>: typed <see cref="Get"/> and <see cref="Value"/>.</summary>
/// <typeparam name="T">The result type.</typeparam>
public class Greenlet<T> : Greenlet
{
    /// <summary>Creates a stackful greenlet that will run <paramref name="body"/>; it does not start until <see cref="Greenlet.Start"/>.</summary>
    public Greenlet(Func<T> body, string? name = null) : base(body, name, stackless: false) { }

    /// <summary>A stackful greenlet of <paramref name="hub"/>, created from any thread (HubGroup).</summary>
    internal Greenlet(Func<T> body, string? name, Hub hub) : base(body, name, stackless: false, hub) { }

    private Greenlet(Func<Task<T>> body, string? name, Hub? hub) : base(body, name, stackless: true, hub) { }

    internal static Greenlet<T> CreateStackless(Func<Task<T>> body, string? name, Hub? hub = null) => new(body, name, hub);

    /// <summary>The body's result once finished successfully; default otherwise.</summary>
    public new T Value => base.Value is T value ? value : default!;

    /// <summary>Waits for the greenlet and returns its result, or rethrows its exception with its original stack. Safe from any thread.</summary>
    /// <exception cref="TimeoutException">It has not finished within <paramref name="timeout"/>.</exception>
    public new T Get(TimeSpan? timeout = null)
    {
        var value = base.Get(timeout);
        if (value is GreenletExit exit)
            throw new InvalidOperationException($"{this} was killed before producing a {typeof(T).Name}.", exit);
        return (T)value!;
    }

    /// <summary>Returns an awaiter whose result is the greenlet's value.</summary>
    public new GreenletAwaiter<T> GetAwaiter() => new(this);

    internal override object? InvokeStackful() => ((Func<T>)Body)();

    internal override Task InvokeStackless()
    {
        var task = ((Func<Task<T>>)Body)() ?? throw new InvalidOperationException($"The async body of {this} returned a null Task.");
        StacklessTask = task;
        return task;
    }

    internal override object? ResultOf(Task task) => ((Task<T>)task).Result;
}
