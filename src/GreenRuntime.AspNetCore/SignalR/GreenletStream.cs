using System.Collections.Concurrent;

namespace GreenRuntime.AspNetCore.SignalR;

/// <summary>
/// A streaming hub method's <see cref="IAsyncEnumerable{T}"/>, seen through the hub filter: SignalR pulls its items after
/// the method has returned, outside any filter, from a thread-pool thread, so each step of the enumerator (the iterator's
/// code up to its next <c>yield</c>) and its disposal (the iterator's <c>finally</c> blocks) run in a greenlet of the
/// host's hubs instead, as the method did.
/// </summary>
/// <remarks>A <c>ChannelReader&lt;T&gt;</c> needs no wrapping: the code that writes to it is started by the method, on its
/// greenlet, and what follows its <c>await</c>s is posted back to the hub by the method's synchronization context.</remarks>
internal static class GreenletStream
{
    private static readonly ConcurrentDictionary<Type, Func<GreenletsHost, object, CancellationToken, object>?> s_wrappers = new();

    /// <summary><paramref name="result"/> wrapped when it is an <see cref="IAsyncEnumerable{T}"/>; otherwise itself.</summary>
    public static object? Wrap(GreenletsHost host, object? result, CancellationToken aborted)
    {
        if (result is null) return null;
        var wrap = s_wrappers.GetOrAdd(result.GetType(), static type =>
        {
            var element = type.GetInterfaces().Append(type)
                .FirstOrDefault(static i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IAsyncEnumerable<>))
                ?.GetGenericArguments()[0];
            if (element is null) return null;
            var create = typeof(GreenletStream).GetMethod(nameof(Create), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(element);
            return create.CreateDelegate<Func<GreenletsHost, object, CancellationToken, object>>();
        });
        return wrap is null ? result : wrap(host, result, aborted);
    }

    private static object Create<T>(GreenletsHost host, object inner, CancellationToken aborted) =>
        new Stream<T>(host, (IAsyncEnumerable<T>)inner, aborted);

    private sealed class Stream<T>(GreenletsHost host, IAsyncEnumerable<T> inner, CancellationToken aborted) : IAsyncEnumerable<T>
    {
        public IAsyncEnumerator<T> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
            new Enumerator<T>(host, inner.GetAsyncEnumerator(cancellationToken), aborted);
    }

    private sealed class Enumerator<T>(GreenletsHost host, IAsyncEnumerator<T> inner, CancellationToken aborted) : IAsyncEnumerator<T>
    {
        private const string StepName = "signalr stream item";

        public T Current => inner.Current;

        public ValueTask<bool> MoveNextAsync() =>
            new(host.RunInGreenletAsync(() => inner.MoveNextAsync().AsTask(), aborted, StepName));

        // Not under the abort: the iterator's finally blocks run, as they would on the pool.
        public ValueTask DisposeAsync() =>
            new(host.RunInGreenletAsync(() => inner.DisposeAsync().AsTask(), CancellationToken.None, StepName));
    }
}
