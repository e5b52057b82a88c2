// The inbox: the only way other threads reach a hub.
//
// Producers (task continuations, I/O completions, Post, Kill from another thread) enqueue a RunItem and
// unpark the inbox signal. The baton holder drains the inbox at the start of every scheduling step and,
// when it has nothing to run, parks on the signal until the next timer deadline. The signal's permit makes
// the race benign: a post that lands between "inbox is empty" and "park" leaves a permit, so the park
// returns at once. Unpark is one atomic exchange when nobody sleeps.

using System.Collections.Concurrent;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private readonly ConcurrentQueue<RunItem> _inbox = new();
    // Never disposed: a post from another thread may unpark it after the hub closed, so its word must outlive every
    // poster. Its eventfd, when the hub has a reactor, is closed only once no unpark holds it (Io/SharedEventFd.cs).
    private readonly Parker _inboxSignal = new();

    /// <summary>The signal posts unpark (tests).</summary>
    internal Parker InboxSignal => _inboxSignal;

    /// <summary>Queues an item for the hub. From the baton holder it goes straight to the ready queue.</summary>
    internal void PostItem(in RunItem item)
    {
        if (IsOnHubThread)
        {
            if (item.Kind == RunKind.Wake) TryWake(item.Token, item.State, item.Error);
            else Enqueue(item);
            return;
        }
        _inbox.Enqueue(item);
        // Lent (Hub.IdleLending.cs): the holder is awake and drains the inbox at its next step, and the idler drains it
        // once it has the baton back; waking the idler would only put it to sleep again.
        if (Volatile.Read(ref _idleBaton) != IdleLent) _inboxSignal.Unpark();
    }

    private void DrainInbox()
    {
        while (_inbox.TryDequeue(out var item))
        {
            if (item.Kind == RunKind.Wake) TryWake(item.Token, item.State, item.Error);
            // A released call's return is a wake too (Hub.Blocking.cs): made here, a lock's goes ahead of the greenlets
            // already ready, as it must, instead of waiting its turn as a callback behind them.
            else if (ReferenceEquals(item.Callback, s_returnFromBlocking)) s_returnFromBlocking(item.State);
            // Edges a lent idle carrier heard (Hub.IdleLending.cs): dispatched here, in the loop phase, as a poll's are,
            // not as a callback in the ready queue (whose synchronization context would send a stackless waiter's
            // continuation to the thread pool).
            else if (ReferenceEquals(item.Callback, s_dispatchForwarded)) s_dispatchForwarded(item.State);
            else Enqueue(item);
        }
    }
}
