// Keep-alive: a wait that only a plain thread will end.
//
// The hub reports LoopExitException when nothing it can see may ever wake its main greenlet: no ready greenlet, no
// timer, no I/O or released call outstanding. A plain thread that holds a primitive (a message broker's consumer
// callback that sets an Event or puts into a GreenQueue) is invisible to it, so such a wait was reported as blocking
// for ever, and the first message came later. A keep-alive scope counts as one outstanding operation while it is open
// (gevent's referenced async watcher does the same for its loop): the hub then sleeps until the thread's signal
// arrives through its inbox instead.

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>
    /// Keeps this hub from reporting that a wait would block for ever (<see cref="LoopExitException"/>) until the
    /// returned scope is disposed: hold one while a thread that is not a greenlet (a library's callback thread, a timer of
    /// the thread pool) may still signal a primitive a greenlet of this hub waits on. The hub cannot see such threads.
    /// </summary>
    /// <example><code>
    /// using var alive = Hub.Current.KeepAlive();      // the consumer's thread will put into the queue
    /// consumer.Received += (_, message) => queue.Put(message);
    /// var first = queue.Get();                         // waits for the first message instead of failing
    /// </code></example>
    /// <returns>The scope; dispose it (from any thread) once no such signal can come any more. Disposing it twice does
    /// nothing.</returns>
    /// <exception cref="InvalidOperationException">Not called on this hub's thread (by one of its greenlets).</exception>
    public IDisposable KeepAlive()
    {
        AssertOnHub();
        _pendingExternal++; // baton-holder state, like every outstanding operation's count
        return new KeepAliveScope(this);
    }

    private sealed class KeepAliveScope(Hub hub) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            if (hub.IsOnHubThread)
            {
                hub._pendingExternal--;
                return;
            }
            try
            {
                hub.PostAction(() => hub._pendingExternal--);
            }
            catch (ObjectDisposedException)
            {
                // The hub is gone: nothing is left to keep alive.
            }
        }
    }
}
