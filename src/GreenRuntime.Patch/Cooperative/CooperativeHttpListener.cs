using System.Net;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="HttpListener.GetContext"/> on a greenlet: its asynchronous form, parked on; one that a kill or timeout
/// abandons is kept for the listener's next <c>GetContext</c>.
/// </summary>
/// <remarks>On Unix the original begins an asynchronous wait for the next request and waits for its handle. A kill or
/// timeout ended the wait but left the request wait queued in the listener, which cannot withdraw it: the next request
/// went to that dead wait and was never answered (a <c>GetContext</c> loop under a short timeout lost every request after
/// the first timeout). So the abandoned wait is kept, and the next <c>GetContext</c> on the same listener, on a greenlet or
/// not, waits for it first (the oldest first, when several were abandoned): no request is lost or answered out of
/// turn.</remarks>
internal static class CooperativeHttpListener
{
    internal static readonly OriginalSlot<Func<HttpListener, HttpListenerContext>> GetContextSlot = new(static listener => listener.GetContext());

    private static readonly ConditionalWeakTable<HttpListener, Queue<Task<HttpListenerContext>>> s_abandoned = new();

    /// <summary>Replaces <see cref="HttpListener.GetContext"/>.</summary>
    public static HttpListenerContext GetContext(HttpListener listener)
    {
        while (true)
        {
            var hub = Cooperative.ParkingHub();
            var pending = TakeAbandoned(listener);
            bool kept = pending is not null;
            if (hub is null)
            {
                if (pending is null) return GetContextSlot.Call(listener);
            }
            else
            {
                if (pending is null)
                {
                    try
                    {
                        pending = listener.GetContextAsync();
                    }
                    catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException or HttpListenerException)
                    {
                        return GetContextSlot.Call(listener); // not started, closed...: the original's own exception
                    }
                }
                try
                {
                    Cooperative.Park(hub, pending, null, WaitReason.Socket);
                }
                catch
                {
                    if (!pending.IsCompleted || pending.IsCompletedSuccessfully) Keep(listener, pending);
                    throw;
                }
            }
            if (kept && WaitCompleted(pending).IsFaulted && listener.IsListening)
                continue; // failed by a stop that a restart has followed since: nobody's (see TakeAbandoned)
            return Result(pending);
        }
    }

    /// <summary>Waits off a hub, where <see cref="GetContext"/> did not park, for a kept wait to end either way.</summary>
    private static Task<HttpListenerContext> WaitCompleted(Task<HttpListenerContext> pending)
    {
        if (!pending.IsCompleted) ((IAsyncResult)pending).AsyncWaitHandle.WaitOne();
        return pending;
    }

    /// <summary>The wait's context, or the exception the original's wait throws: a listener stopped or closed while it
    /// waited ends the asynchronous form with <see cref="ObjectDisposedException"/>, and the original, which waits on the
    /// same asynchronous result, turns that into <c>HttpListenerException</c> 500, the one a server loop catches to end.</summary>
    private static HttpListenerContext Result(Task<HttpListenerContext> pending)
    {
        try
        {
            return pending.GetAwaiter().GetResult();
        }
        catch (ObjectDisposedException)
        {
            throw new HttpListenerException(500, "Listener closed.");
        }
    }

    /// <summary>The oldest kept wait still worth waiting for. One that failed since it was kept (the listener was stopped)
    /// has nobody to report to: on a thread, the wait that failed was the caller's own, and a restarted listener's next
    /// <c>GetContext</c> serves the next request. The stop fails the kept wait a moment later, on another thread, so one
    /// taken before that is dropped when it fails while the listener listens again (<see cref="GetContext"/>).</summary>
    private static Task<HttpListenerContext>? TakeAbandoned(HttpListener listener)
    {
        if (!s_abandoned.TryGetValue(listener, out var queue)) return null;
        lock (queue)
        {
            while (queue.Count > 0)
            {
                var kept = queue.Dequeue();
                if (!kept.IsCompleted || kept.IsCompletedSuccessfully) return kept;
            }
            return null;
        }
    }

    private static void Keep(HttpListener listener, Task<HttpListenerContext> pending)
    {
        var queue = s_abandoned.GetValue(listener, static _ => new Queue<Task<HttpListenerContext>>());
        lock (queue)
            queue.Enqueue(pending);
    }
}
