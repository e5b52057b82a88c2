using System.Runtime.ExceptionServices;

namespace GreenRuntime;

/// <summary>A greenlet whose body returns a <typeparamref name="T"/>: typed <see cref="Get"/> and <see cref="Value"/>.</summary>
/// <typeparam name="T">The result type.</typeparam>
public sealed class Greenlet<T> : Greenlet
{
    /// <summary>Creates a stackful greenlet that will run <paramref name="body"/>; it does not start until <see cref="Greenlet.Start"/>.</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is a <see cref="Task"/> or <see cref="ValueTask"/>
    /// type: async code runs as a stackless greenlet (<see cref="Green.SpawnAsync{T}(Func{Task{T}}, string?)"/>).</exception>
    public Greenlet(Func<T> body, string? name = null) : base(RejectTaskResult(body), name, stackless: false) { }

    /// <summary>A stackful greenlet of <paramref name="hub"/>, created from any thread (HubGroup).</summary>
    internal Greenlet(Func<T> body, string? name, Hub hub) : base(body, name, stackless: false, hub) { }

    private Greenlet(Func<Task<T>> body, string? name, Hub? hub) : base(body, name, stackless: true, hub) { }

    internal static Greenlet<T> CreateStackless(Func<Task<T>> body, string? name, Hub? hub = null) => new(body, name, hub);

    // Spawn(Func<T>) also accepts an async lambda (T is then Task): that greenlet would end as soon as the body
    // returned its task, with the rest of the async code running unjoined, unkillable and unobserved. Before the
    // stackless forms were named SpawnAsync the same lambda made a stackless greenlet, so this is also the one place
    // that turns a silent change of meaning into a clear error.
    private static Func<T> RejectTaskResult(Func<T> body)
    {
        var type = typeof(T);
        if (typeof(Task).IsAssignableFrom(type) || type == typeof(ValueTask)
            || (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ValueTask<>)))
        {
            throw new ArgumentException(
                $"The body of a stackful greenlet returns a {type.Name}, so the greenlet would end when the task is " +
                "returned, not when it completes. Run async code with Green.SpawnAsync (or GreenGroup.SpawnAsync), " +
                "which makes a stackless greenlet that ends with the task, or wait for the task inside the body.",
                nameof(body));
        }
        return body;
    }

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
