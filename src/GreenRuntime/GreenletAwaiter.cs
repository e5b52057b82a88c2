using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace GreenRuntime;

/// <summary>Awaits a <see cref="Greenlet"/>: completes when it is dead and rethrows its exception.</summary>
/// <remarks>The continuation runs on the synchronization context captured at the await (on a stackless greenlet, the
/// hub), or on the thread pool when there is none. Awaiting from another thread than the greenlet's hub is allowed.</remarks>
public readonly struct GreenletAwaiter : ICriticalNotifyCompletion
{
    private readonly Greenlet _greenlet;

    internal GreenletAwaiter(Greenlet greenlet) => _greenlet = greenlet;

    /// <summary>Whether the greenlet is dead.</summary>
    public bool IsCompleted => _greenlet.Dead;

    /// <summary>Rethrows the greenlet's exception, if any.</summary>
    public void GetResult() => GreenletAwaiting.Result(_greenlet);

    /// <inheritdoc/>
    public void OnCompleted(Action continuation) => GreenletAwaiting.OnCompleted(_greenlet, continuation);

    /// <inheritdoc/>
    public void UnsafeOnCompleted(Action continuation) => GreenletAwaiting.OnCompleted(_greenlet, continuation);
}

/// <summary>Awaits a <see cref="Greenlet{T}"/>: its result is the greenlet's value.</summary>
/// <typeparam name="T">The result type.</typeparam>
public readonly struct GreenletAwaiter<T> : ICriticalNotifyCompletion
{
    private readonly Greenlet<T> _greenlet;

    internal GreenletAwaiter(Greenlet<T> greenlet) => _greenlet = greenlet;

    /// <summary>Whether the greenlet is dead.</summary>
    public bool IsCompleted => _greenlet.Dead;

    /// <summary>Returns the greenlet's value or rethrows its exception.</summary>
    public T GetResult()
    {
        GreenletAwaiting.Result(_greenlet);
        return _greenlet.Value;
    }

    /// <inheritdoc/>
    public void OnCompleted(Action continuation) => GreenletAwaiting.OnCompleted(_greenlet, continuation);

    /// <inheritdoc/>
    public void UnsafeOnCompleted(Action continuation) => GreenletAwaiting.OnCompleted(_greenlet, continuation);
}

internal static class GreenletAwaiting
{
    public static void Result(Greenlet g)
    {
        if (!g.Dead) throw new InvalidOperationException($"{g} has not finished; await it instead of calling GetResult.");
        if (g.Exception != null) ExceptionDispatchInfo.Throw(g.Exception);
    }

    public static void OnCompleted(Greenlet g, Action continuation)
    {
        var context = SynchronizationContext.Current;
        Action<Greenlet> link = _ =>
        {
            if (context != null) context.Post(static c => ((Action)c!)(), continuation);
            else ThreadPool.UnsafeQueueUserWorkItem(static c => c(), continuation, preferLocal: false);
        };
        if (g.Hub.IsOnHubThread) g.AddLink(link, LinkKind.All);
        else g.Hub.PostAction(() => g.AddLink(link, LinkKind.All));
    }
}
