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
        var hub = Cooperative.ParkingHub();
        var pending = TakeAbandoned(listener);
        if (hub is null)
            return pending is null ? GetContextSlot.Call(listener) : pending.GetAwaiter().GetResult();
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
        return pending.GetAwaiter().GetResult();
    }

    private static Task<HttpListenerContext>? TakeAbandoned(HttpListener listener)
    {
        if (!s_abandoned.TryGetValue(listener, out var queue)) return null;
        lock (queue)
            return queue.Count > 0 ? queue.Dequeue() : null;
    }

    private static void Keep(HttpListener listener, Task<HttpListenerContext> pending)
    {
        var queue = s_abandoned.GetValue(listener, static _ => new Queue<Task<HttpListenerContext>>());
        lock (queue)
            queue.Enqueue(pending);
    }
}
