// The reactor: the hub's own epoll loop for socket readiness (Linux x64).
//
// Glossary
//   registration  one socket's entry: its handle, the greenlets parked to read and to write, at most one
//                 stackless waiter per direction, and the "ready" flags of readiness that arrived while nobody waited.
//   edge          an epoll event: with EPOLLET the kernel reports each new arrival of data (or buffer space)
//                 once, not the state "readable".
//
// Design: the greenlet tries the non-blocking system call first; only on EAGAIN does it park here. The baton
// holder that has nothing else to run waits in epoll_wait itself (instead of on the inbox futex: the inbox's
// Parker writes an eventfd in the same epoll set), and every 64 scheduling steps it polls without waiting so
// busy greenlets cannot starve I/O. A ready socket's greenlet is resumed by the very thread that saw the event:
// no runtime epoll thread, no thread-pool hop, no inbox hop.
//
// Protocol (all on the baton holder, so readers, writers and flags need no locks):
//   1. Register(handle, fd): the first wait on a socket adds its fd once, edge-triggered for in and out.
//   2. Wait: if a ready flag is set, clear it and return at once (the caller retries its call, which may see
//      EAGAIN again: a spurious retry, never a lost wake). Otherwise park with the token in the registration;
//      several greenlets may park for one direction of one socket, as several threads may block in Receive.
//   3. Poll: for each event, wake the parked readers/writers and the stackless waiter of that direction (TryWake;
//      every park has exactly one wake; with several, each retries and those that see EAGAIN wait again) or, if
//      there is none, set the ready flag.
// Lost wakes cannot happen: an edge that arrives after the caller's EAGAIN is either already in the flag
// (step 2) or still in the kernel's ready list, which the next poll drains after the park is registered.
// One wait runs off the baton holder: an idle carrier that has offered or lent the hub's baton (Hub.IdleLending.cs)
// sleeps in epoll_wait without it, into a buffer of its own (SleepWithoutBaton), while the holder's non-waiting polls
// use the reactor's. The edges it receives are reported to nobody else: it dispatches them once it holds the baton, or
// passes them to the holder through the inbox (DispatchForwarded), never drops them.
//
// Stackless waiters (WaitAsync): a registration may hold, instead of a parked greenlet, an AsyncWait whose Task the
// poll completes on the baton holder; the awaiting code's continuation then goes through the hub's synchronization
// context like any other. This is how an idle keep-alive connection waits with no greenlet stack and no carrier.
//
// Async calls take turns, per socket and direction: one receive and one send of a socket at a time go through the
// reactor, the others wait in arrival order (Turn below), as .NET's socket engine queues them. Otherwise a send that
// arrives while another waits for buffer space would go out at once (or through .NET's engine), in the middle of the
// first one's bytes, and a receive made while another waits for data would race it for the next bytes: whichever
// system call ran first would take them, so the two callers could see the stream out of order.
//
// A socket closed while a greenlet waits on it: close() silently drops the fd from every epoll set, so no event
// says so. Whoever closes a socket through Socket.Dispose under Patch.All(), or calls CooperativeSocket.NotifyClosed,
// ends its waits at once (EndWaitsOnClosed: every reactor that watches the handle is told, on its own baton holder,
// through its inbox), as closing wakes the threads blocked on a socket. For a close nobody reports the reactor
// sweeps its registrations every 250 ms while it has any and wakes the waiters of closed handles with Closed; a
// registration found for a *different* handle on the same fd number (closed and reused) is replaced the same way.
//
// Rejected designs
//   * One-shot registrations (EPOLLONESHOT): an epoll_ctl per wait, one more system call per round trip.
//   * Level-triggered: a readable socket nobody reads would wake every poll.
//   * Holding a reference on the handle while parked (DangerousAddRef): Socket.Dispose then spins until the
//     reference goes, on the very hub that must run the waiter to release it.

using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Io;

/// <summary>Why <see cref="Reactor.Wait"/> returned.</summary>
internal enum Readiness
{
    /// <summary>Readiness was reported (or may have been): retry the call.</summary>
    Ready,

    /// <summary>The timeout elapsed first.</summary>
    TimedOut,

    /// <summary>The socket was closed while the greenlet waited.</summary>
    Closed,

}

/// <summary>One hub's epoll set. Everything but the constructor, <see cref="SleepWithoutBaton"/>,
/// <see cref="ForwardIdleEvents"/> and <see cref="Interrupt"/> runs on the hub's baton holder.</summary>
internal sealed unsafe class Reactor : IDisposable
{
    private const int MaxEvents = 256;
    private const ulong EventFdMark = ulong.MaxValue;
    private static readonly long s_sweepInterval = Stopwatch.Frequency / 4;
    private static readonly object s_closed = new();
    private static bool s_preciseWaitMissing;

    private readonly Hub _hub;
    private readonly int _epfd;
    private readonly int _eventFd;
    private Epoll.Event* _events;
    /// <summary>The buffer of the idle carrier that sleeps in epoll_wait with the baton offered or lent
    /// (<see cref="SleepWithoutBaton"/>): the holder's own polls fill <see cref="_events"/> meanwhile. Used by one thread
    /// at a time: only the baton holder offers the baton, and the next offer needs the baton back.</summary>
    private Epoll.Event* _idleEvents;
    private readonly Dictionary<int, Registration> _registrations = new();
    private long _nextSweep;

    /// <summary>Every live registration of a handle, across reactors (chained through <see cref="Registration.NextWatcher"/>,
    /// under <see cref="s_watchersLock"/>): what <see cref="EndWaitsOnClosed"/> looks up from whichever thread closes a
    /// socket. Weak, so a handle nobody closes properly is not kept alive by it.</summary>
    private static readonly ConditionalWeakTable<SafeHandle, Registration> s_watchers = new();
    private static readonly Lock s_watchersLock = new();

    // Invariant: s_watchersLock is taken only with cooperation suppressed, so neither its enter nor the weak table's own
    // lock inside releases the baton. Hub code (a sweep, a callback) takes it holding the baton; a greenlet that won it in
    // a released wait and then queued for the baton, holding it, deadlocked that hub (seen under wrk with two hubs).

    private sealed class Registration(Reactor owner, SafeHandle handle, int fd)
    {
        public readonly Reactor Owner = owner;
        public readonly int Fd = fd;
        public SafeHandle Handle = handle;

        /// <summary>The handle's registration in another reactor (greenlets of two hubs waiting on one socket); rare.</summary>
        public Registration? NextWatcher;
        /// <summary>The first greenlet parked for each direction; default when none (a woken token is cleared, so
        /// an idle socket's registration keeps no finished greenlet alive).</summary>
        public WakeToken Reader, Writer;
        public bool ReadReady, WriteReady;
        public AsyncWait? AsyncReader, AsyncWriter;

        /// <summary>Parked greenlets beyond the first of one direction: several greenlets may block on one socket, as
        /// several threads may in Socket.Receive; an edge wakes them all and each retries its call. Null while unused.</summary>
        public List<WakeToken>? MoreReaders, MoreWriters;

        /// <summary>An async receive / send holds the socket's turn for its direction (Turn); the others queued for it, in order.</summary>
        public bool Receiving, Sending;
        public Queue<Turn>? QueuedReceives, QueuedSends;

        public ref bool TurnHeld(bool write) => ref write ? ref Sending : ref Receiving;

        public ref Queue<Turn>? Queued(bool write) => ref write ? ref QueuedSends : ref QueuedReceives;

        public bool IsWaited(bool write) => write
            ? !Writer.IsEmpty || MoreWriters is { Count: > 0 } || AsyncWriter != null
            : !Reader.IsEmpty || MoreReaders is { Count: > 0 } || AsyncReader != null;

        /// <summary>Records a parked greenlet; the first one of a direction takes the field, the others the list.</summary>
        public void AddParked(bool write, in WakeToken token)
        {
            ref WakeToken first = ref write ? ref Writer : ref Reader;
            if (!first.IsEmpty && first.IsCurrent)
            {
                (write ? MoreWriters ??= new() : MoreReaders ??= new()).Add(token);
                return;
            }
            first = token;
        }

        /// <summary>Wakes every greenlet parked for this direction (with <paramref name="value"/>). Whether one was woken.</summary>
        public bool WakeParked(Hub hub, bool write, object? value = null)
        {
            ref WakeToken first = ref write ? ref Writer : ref Reader;
            bool woke = !first.IsEmpty && hub.TryWake(first, value);
            first = default;
            if ((write ? MoreWriters : MoreReaders) is { Count: > 0 } more)
            {
                foreach (var token in more) woke |= hub.TryWake(token, value);
                more.Clear();
            }
            return woke;
        }

        /// <summary>Forgets a park that a kill or a timeout ended: the registration must not keep a token that is no longer current.</summary>
        public void RemoveParked(bool write, in WakeToken token)
        {
            ref WakeToken first = ref write ? ref Writer : ref Reader;
            if (!first.IsEmpty && first.Names(token)) first = default;
            else if ((write ? MoreWriters : MoreReaders) is { } more)
                for (int i = 0; i < more.Count; i++)
                    if (more[i].Names(token))
                    {
                        more.RemoveAt(i);
                        break;
                    }
        }
    }

    /// <summary>One stackless wait (<see cref="WaitAsync"/>): completed exactly once, by readiness, its timeout, its
    /// cancellation token or the socket's closing, always on the baton holder.</summary>
    private sealed class AsyncWait(Reactor reactor, Registration registration, bool write, CancellationToken cancel, Action? onDone) : TaskCompletionSource<SocketError>
    {
        public Hub Hub => reactor._hub;
        public HubTimer? Timer;
        public CancellationTokenRegistration Cancellation;
        private bool _done;

        /// <param name="readiness">Why the wait ended; null: its cancellation token fired.</param>
        public void Complete(Readiness? readiness)
        {
            if (_done) return;
            _done = true;
            if (write && registration.AsyncWriter == this) registration.AsyncWriter = null;
            if (!write && registration.AsyncReader == this) registration.AsyncReader = null;
            Timer?.Cancel();
            Cancellation.Unregister(); // never waits, unlike Dispose, so it is safe from inside the token's own callback
            reactor._hub.EndExternalWait();
            switch (readiness)
            {
                case null: TrySetCanceled(cancel); break;
                case Readiness.Ready: TrySetResult(SocketError.Success); break;
                case Readiness.TimedOut: TrySetResult(SocketError.TimedOut); break;
                default: TrySetResult(SocketError.OperationAborted); break; // closed under the wait, as the blocking calls report it
            }
            // Called directly, not as a continuation of the Task: the Task machinery would queue it to the thread pool
            // whenever the baton holder's current SynchronizationContext is not the default one.
            onDone?.Invoke();
        }
    }

    /// <exception cref="IOException">The kernel refused an epoll set or an eventfd (e.g. out of file descriptors).</exception>
    public Reactor(Hub hub)
    {
        _hub = hub;
        _epfd = Epoll.Create(Epoll.CloseOnExec);
        if (_epfd < 0) throw new IOException($"epoll_create1 failed (errno {Marshal.GetLastPInvokeError()}).");
        _eventFd = Epoll.EventFd(0, Epoll.CloseOnExec | Epoll.NonBlock);
        if (_eventFd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Epoll.Close(_epfd);
            throw new IOException($"eventfd failed (errno {errno}).");
        }
        var ev = new Epoll.Event { Events = Epoll.In, Data = EventFdMark };
        Epoll.Control(_epfd, Epoll.CtlAdd, _eventFd, &ev);
        EventFd = new SharedEventFd(_eventFd);
        _events = (Epoll.Event*)NativeMemory.Alloc(MaxEvents, (nuint)sizeof(Epoll.Event));
        _idleEvents = (Epoll.Event*)NativeMemory.Alloc(MaxEvents, (nuint)sizeof(Epoll.Event));
    }

    /// <summary>The eventfd that interrupts a sleeping <see cref="Poll"/>, which the inbox's Parker writes from any thread:
    /// closed only once no such write can still be under way.</summary>
    public SharedEventFd EventFd { get; }

    /// <summary>Registered sockets (for diagnostics and tests).</summary>
    public int RegistrationCount => _registrations.Count;

    /// <summary>
    /// Steps 1–2: parks the current greenlet until <paramref name="fd"/> may be readable (or writable), the
    /// timeout elapses or the socket is closed. Null when the kernel refuses to watch this fd (not a socket,
    /// say): the caller must wait another way.
    /// </summary>
    public Readiness? Wait(SafeHandle handle, int fd, bool write, TimeSpan? timeout, WaitReason reason = WaitReason.Socket)
    {
        var r = Register(handle, fd);
        if (r == null) return null;
        if (write ? r.WriteReady : r.ReadReady)
        {
            if (write) r.WriteReady = false;
            else r.ReadReady = false;
            return Readiness.Ready;
        }
        return ParkUntilReady(new ReadOnlySpan<Registration>(ref r), new ReadOnlySpan<bool>(ref write), timeout, reason);
    }

    /// <summary>Parks the current greenlet until one of <paramref name="registrations"/> reports readiness for its
    /// direction (<paramref name="writes"/>), its timeout passes, or one is closed: one park, one token in every
    /// registration, so the first edge wakes it and later ones find the token spent.</summary>
    private Readiness ParkUntilReady(ReadOnlySpan<Registration> registrations, ReadOnlySpan<bool> writes, TimeSpan? timeout, WaitReason reason = WaitReason.Socket)
    {
        var token = _hub.BeginPark(reason);
        for (int i = 0; i < registrations.Length; i++) registrations[i].AddParked(writes[i], token);
        _hub.BeginExternalWait();
        HubTimer? timer = null;
        try
        {
            if (timeout is { } limit && limit != Timeout.InfiniteTimeSpan) timer = _hub.AddWakeTimer(limit, token, Hub.TimedOut);
            var value = _hub.EndPark(token);
            if (ReferenceEquals(value, Hub.TimedOut)) return Readiness.TimedOut;
            return ReferenceEquals(value, s_closed) ? Readiness.Closed : Readiness.Ready;
        }
        finally
        {
            timer?.Cancel();
            _hub.EndExternalWait();
            // Nothing for a registration whose edge woke it (the wake cleared it).
            for (int i = 0; i < registrations.Length; i++) registrations[i].RemoveParked(writes[i], token);
        }
    }

    /// <summary>
    /// <see cref="Wait"/> for several sockets at once (Socket.Select): parks until any of <paramref name="targets"/> may
    /// be ready for its direction, its timeout passes, or one is closed. Null, before parking, when the kernel refuses to
    /// watch one of them.
    /// </summary>
    public Readiness? WaitAny(ReadOnlySpan<(SafeHandle Handle, int Fd, bool Write)> targets, TimeSpan? timeout)
    {
        var registrations = new Registration[targets.Length];
        var writes = new bool[targets.Length];
        for (int i = 0; i < targets.Length; i++)
        {
            if (Register(targets[i].Handle, targets[i].Fd) is not { } r) return null;
            registrations[i] = r;
            writes[i] = targets[i].Write;
        }
        for (int i = 0; i < targets.Length; i++)
        {
            ref bool ready = ref writes[i] ? ref registrations[i].WriteReady : ref registrations[i].ReadReady;
            if (!ready) continue;
            ready = false;
            return Readiness.Ready;
        }
        return ParkUntilReady(registrations, writes, timeout);
    }

    /// <summary>
    /// The stackless form of <see cref="Wait"/>, in the socket calls' terms: a Task that completes with
    /// <see cref="SocketError.Success"/> when <paramref name="fd"/> may be readable (or writable),
    /// <see cref="SocketError.TimedOut"/> after <paramref name="timeout"/>, <see cref="SocketError.OperationAborted"/>
    /// when the socket is closed, or is cancelled by <paramref name="cancel"/>. Nothing is parked meanwhile. Null when
    /// the kernel refuses to watch this fd.
    /// </summary>
    /// <remarks><paramref name="onDone"/>, when given, is called on the baton holder right after the returned Task
    /// completed (unless it is returned already completed).</remarks>
    /// <exception cref="InvalidOperationException">Someone already waits for the same direction of this socket.</exception>
    public Task<SocketError>? WaitAsync(SafeHandle handle, int fd, bool write, TimeSpan? timeout, CancellationToken cancel, Action? onDone = null)
    {
        var r = Register(handle, fd);
        if (r == null) return null;
        if (r.IsWaited(write))
            throw new InvalidOperationException($"Another wait for this socket to become {(write ? "writable" : "readable")} is in progress; a socket has at most one asynchronous reader and one asynchronous writer at a time.");
        if (cancel.IsCancellationRequested) return Task.FromCanceled<SocketError>(cancel);
        if (write ? r.WriteReady : r.ReadReady)
        {
            if (write) r.WriteReady = false;
            else r.ReadReady = false;
            return Task.FromResult(SocketError.Success);
        }
        var wait = new AsyncWait(this, r, write, cancel, onDone);
        if (write) r.AsyncWriter = wait;
        else r.AsyncReader = wait;
        _hub.BeginExternalWait();
        if (timeout is { } limit && limit != Timeout.InfiniteTimeSpan)
            wait.Timer = _hub.AddTimer(limit < TimeSpan.Zero ? TimeSpan.Zero : limit, static w => ((AsyncWait)w!).Complete(Readiness.TimedOut), wait);
        if (cancel.CanBeCanceled)
        {
            // The token may fire on any thread: the completion is posted to the hub, which runs it on the baton holder.
            wait.Cancellation = cancel.UnsafeRegister(static (w, token) =>
            {
                var self = (AsyncWait)w!;
                self.Hub.PostItem(RunItem.ForCallback(static a => ((AsyncWait)a!).Complete(null), self));
            }, wait);
        }
        return wait.Task;
    }

    /// <summary>
    /// Takes the socket's turn for an async call of the stackless greenlet <paramref name="owner"/> in one direction.
    /// <paramref name="queued"/> null: the caller has it now and must give it back with <see cref="ReleaseTurn"/> once its
    /// call is done (at once, or when its operation ends). Otherwise the Task that completes, in the caller's greenlet, when
    /// the turn is the caller's; cancelled by <paramref name="cancel"/> meanwhile, or failed by a kill or timeout of
    /// <paramref name="owner"/>, it ends with that and the turn goes to the next in line. False: the kernel refuses to
    /// watch the fd.
    /// </summary>
    public bool TryTakeTurn(SafeHandle handle, int fd, bool write, Greenlet owner, CancellationToken cancel, out Task? queued)
    {
        queued = null;
        var r = Register(handle, fd);
        if (r == null) return false;
        ref bool held = ref r.TurnHeld(write);
        if (!held)
        {
            held = true;
            return true;
        }
        var turn = new Turn(this, handle, fd, write, owner, cancel);
        (r.Queued(write) ??= new()).Enqueue(turn);
        queued = turn.Task;
        return true;
    }

    /// <summary>Gives the turn taken with <see cref="TryTakeTurn"/> to the next call in line, if any.</summary>
    public void ReleaseTurn(SafeHandle handle, int fd, bool write)
    {
        if (!_registrations.TryGetValue(fd, out var r) || !ReferenceEquals(r.Handle, handle)) return;
        if (r.Queued(write) is { Count: > 0 } queue) queue.Dequeue().Hand();
        else r.TurnHeld(write) = false;
    }

    /// <summary>One async call waiting for its socket's turn in one direction; one of its greenlet's pending waits, so a
    /// kill or a timeout ends it.</summary>
    internal sealed class Turn : TaskCompletionSource, Sync.IAsyncWait
    {
        private readonly Reactor _reactor;
        private readonly SafeHandle _handle;
        private readonly int _fd;
        private readonly bool _write;
        private readonly Greenlet _owner;
        private readonly CancellationTokenRegistration _cancellation;

        public Turn(Reactor reactor, SafeHandle handle, int fd, bool write, Greenlet owner, CancellationToken cancel)
        {
            _reactor = reactor;
            _handle = handle;
            _fd = fd;
            _write = write;
            _owner = owner;
            owner.TrackAsyncWait(this, GreenTimeout.FlowScope); // made by the caller, in its code's flow
            if (cancel.CanBeCanceled)
                _cancellation = cancel.UnsafeRegister(static (t, token) => ((Turn)t!).TrySetCanceled(token), this);
        }

        /// <summary>A kill or an expired GreenTimeout of the waiting greenlet (on the baton holder): the call ends with it,
        /// and its place in line is skipped when its turn comes.</summary>
        public void Fail(Exception error) => TrySetException(error);

        /// <summary>The turn is this call's: it goes on in its own greenlet (not here, inside the reactor's poll or the
        /// previous call's completion, where no greenlet runs). One that ended meanwhile passes the turn on.</summary>
        public void Hand()
        {
            try
            {
                _owner.SyncContext!.Post(static t => ((Turn)t!).Begin(), this);
            }
            catch (ObjectDisposedException)
            {
                TrySetCanceled(); // its hub is gone, and the greenlet with it
            }
        }

        private void Begin()
        {
            _cancellation.Unregister();
            _owner.UntrackAsyncWait(this);
            // Under no synchronization context, so the call's await (ConfigureAwait(false)) goes on right here, in its
            // greenlet: the runtime inlines such a continuation only where no context is set, and would otherwise send it
            // to the thread pool, off the hub, with the turn.
            var saved = SynchronizationContext.Current;
            SynchronizationContext.SetSynchronizationContext(null);
            try
            {
                if (!TrySetResult()) _reactor.ReleaseTurn(_handle, _fd, _write);
            }
            finally
            {
                SynchronizationContext.SetSynchronizationContext(saved);
            }
        }
    }

    /// <summary>Whether a <see cref="WaitAsync"/> for this direction of the socket can start now: the kernel watches the fd
    /// (registering it on first use) and nobody else waits for the same direction.</summary>
    public bool CanWaitAsync(SafeHandle handle, int fd, bool write) => Register(handle, fd) is { } r && !r.IsWaited(write);

    /// <summary>Ends <paramref name="wait"/> (a Task <see cref="WaitAsync"/> returned for this fd and direction) as if its
    /// cancellation token had fired; nothing if it already ended. For a kill or a timeout of the waiting greenlet.</summary>
    public void CancelWait(int fd, bool write, Task<SocketError> wait)
    {
        if (!_registrations.TryGetValue(fd, out var r)) return;
        var pending = write ? r.AsyncWriter : r.AsyncReader;
        if (pending != null && pending.Task == wait) pending.Complete(null);
    }

    private Registration? Register(SafeHandle handle, int fd)
    {
        while (_registrations.TryGetValue(fd, out var old))
        {
            if (ReferenceEquals(old.Handle, handle)) return old;
            // The old socket was closed and its number reused: its waiters will never hear from it. Forgotten first:
            // ending their waits may run continuations right here, which may register this very fd (hence the loop).
            _registrations.Remove(fd);
            Unwatch(old);
            AbortWaiters(old);
        }
        var ev = new Epoll.Event { Events = Epoll.In | Epoll.Out | Epoll.RdHup | Epoll.EdgeTriggered, Data = (ulong)fd };
        if (Epoll.Control(_epfd, Epoll.CtlAdd, fd, &ev) != 0)
        {
            if (Marshal.GetLastPInvokeError() != Epoll.EEXIST || Epoll.Control(_epfd, Epoll.CtlMod, fd, &ev) != 0)
                return null;
        }
        var r = new Registration(this, handle, fd);
        _registrations[fd] = r;
        Watch(r);
        if (_registrations.Count == 1) _nextSweep = Stopwatch.GetTimestamp() + s_sweepInterval;
        return r;
    }

    /// <summary>
    /// Step 3: collects readiness and wakes the greenlets it concerns. With a non-zero timeout (nanoseconds,
    /// negative = until something happens) the caller sleeps here unless <paramref name="signal"/> already
    /// holds a permit; a post to the hub's inbox (which unparks <paramref name="signal"/>) ends the sleep.
    /// </summary>
    public void Poll(long timeoutNs, Parker signal)
    {
        timeoutNs = SleepLimit(timeoutNs);
        bool sleeping = timeoutNs != 0 && signal.BeginExternalSleep();
        int n = WaitForEvents(_events, sleeping ? timeoutNs : 0);
        if (sleeping) signal.EndExternalSleep(); // a permit that came meanwhile only meant "inbox not empty": drained next step
        for (int i = 0; i < n; i++)
        {
            var ev = _events[i];
            if (ev.Data == EventFdMark)
            {
                ulong count;
                Epoll.Read(_eventFd, &count, sizeof(ulong));
            }
            else
            {
                Dispatch((int)ev.Data, ev.Events);
            }
        }
        if (_registrations.Count > 0 && Stopwatch.GetTimestamp() >= _nextSweep) Sweep();
    }

    /// <summary>How long a sleep in epoll may last (nanoseconds, negative: no limit): <paramref name="timeoutNs"/>, or
    /// less when the 250 ms sweep falls due first. Baton holder only.</summary>
    public long SleepLimit(long timeoutNs)
    {
        if (_registrations.Count > 0)
        {
            long toSweep = Math.Max(0, (long)((_nextSweep - Stopwatch.GetTimestamp()) * (1e9 / Stopwatch.Frequency)));
            if (timeoutNs < 0 || timeoutNs > toSweep) timeoutNs = toSweep;
        }
        return timeoutNs;
    }

    /// <summary>
    /// The idle carrier's sleep while the baton is offered or lent (Hub.IdleLending.cs), on a thread that does not hold
    /// the baton: waits in epoll_wait into its own buffer until an event, <paramref name="timeoutNs"/> (negative: none) or
    /// the eventfd (a post, or the baton handed back), unless <paramref name="signal"/> already holds a permit. Touches
    /// nothing of the reactor but its fds and that buffer. Returns the number of socket events now at the start of the
    /// buffer (the eventfd's are consumed here), which the caller must dispatch once it holds the baton
    /// (<see cref="DispatchIdleEvents"/>) or forward to the holder (<see cref="ForwardIdleEvents"/>) before it sleeps here
    /// again: with edge-triggered registrations the kernel reports them to nobody else.
    /// </summary>
    public int SleepWithoutBaton(long timeoutNs, Parker signal)
    {
        if (!signal.BeginExternalSleep()) return 0; // a permit: the edges, if any, stay in the kernel for the next poll
        int n = WaitForEvents(_idleEvents, timeoutNs);
        signal.EndExternalSleep();
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            if (_idleEvents[i].Data == EventFdMark)
            {
                ulong count;
                Epoll.Read(_eventFd, &count, sizeof(ulong));
            }
            else
            {
                _idleEvents[kept++] = _idleEvents[i];
            }
        }
        return kept;
    }

    /// <summary>The idle carrier has the baton again: dispatches the <paramref name="count"/> events its sleep left in its
    /// buffer, and sweeps if due, as a <see cref="Poll"/> would have. Baton holder only.</summary>
    public void DispatchIdleEvents(int count)
    {
        for (int i = 0; i < count; i++) Dispatch((int)_idleEvents[i].Data, _idleEvents[i].Events);
        if (_registrations.Count > 0 && Stopwatch.GetTimestamp() >= _nextSweep) Sweep();
    }

    /// <summary>The idle carrier woke with <paramref name="count"/> events while another thread holds the baton: a copy
    /// for an inbox item that the holder dispatches (<see cref="DispatchForwarded"/>). Called without the baton.</summary>
    public Epoll.Event[] ForwardIdleEvents(int count) => new ReadOnlySpan<Epoll.Event>(_idleEvents, count).ToArray();

    /// <summary>Dispatches events that the idle carrier received while it was lent (<see cref="ForwardIdleEvents"/>). Baton
    /// holder only; nothing once the reactor is disposed.</summary>
    public void DispatchForwarded(Epoll.Event[] events)
    {
        if (_events == null) return;
        foreach (var ev in events) Dispatch((int)ev.Data, ev.Events);
    }

    /// <summary>Writes the eventfd: a sleep in epoll_wait on this set ends whatever the inbox signal's word says. Only
    /// while the reactor cannot be disposed (its hub's baton held, or not yet handed on): it writes the number without
    /// the reference a post takes (<see cref="SharedEventFd"/>).</summary>
    public void Interrupt()
    {
        ulong one = 1;
        Epoll.Write(_eventFd, &one, sizeof(ulong)); // cannot block: the counter would have to reach 2^64-1
    }

    private int WaitForEvents(Epoll.Event* events, long timeoutNs)
    {
        while (true)
        {
            int n;
            if (timeoutNs == 0 || timeoutNs < 0 || s_preciseWaitMissing)
            {
                // Milliseconds, rounded up: a timer must never fire early.
                int ms = timeoutNs < 0 ? -1 : (int)Math.Min(int.MaxValue, (timeoutNs + 999_999) / 1_000_000);
                n = Epoll.Wait(_epfd, events, MaxEvents, ms);
            }
            else
            {
                var ts = new Epoll.Timespec { Seconds = timeoutNs / 1_000_000_000, Nanoseconds = timeoutNs % 1_000_000_000 };
                try
                {
                    n = Epoll.WaitPrecise(_epfd, events, MaxEvents, &ts, null);
                }
                catch (EntryPointNotFoundException)
                {
                    s_preciseWaitMissing = true;
                    continue;
                }
                if (n < 0 && Marshal.GetLastPInvokeError() == Epoll.ENOSYS)
                {
                    s_preciseWaitMissing = true;
                    continue;
                }
            }
            if (n >= 0) return n;
            if (Marshal.GetLastPInvokeError() != Epoll.EINTR)
                throw new IOException($"epoll_wait failed (errno {Marshal.GetLastPInvokeError()}).");
            return 0; // interrupted by a signal: the scheduler comes back here if there is still nothing to do
        }
    }

    private void Dispatch(int fd, uint events)
    {
        if (!_registrations.TryGetValue(fd, out var r)) return;
        if ((events & (Epoll.In | Epoll.RdHup | Epoll.Hup | Epoll.Err)) != 0)
        {
            // Parked greenlets and a stackless waiter may wait for one direction together: the edge is for all of them.
            bool woke = r.WakeParked(_hub, write: false);
            if (r.AsyncReader is { } reader)
            {
                reader.Complete(Readiness.Ready);
                woke = true;
            }
            if (!woke) r.ReadReady = true;
        }
        if ((events & (Epoll.Out | Epoll.Hup | Epoll.Err)) != 0)
        {
            bool woke = r.WakeParked(_hub, write: true);
            if (r.AsyncWriter is { } writer)
            {
                writer.Complete(Readiness.Ready);
                woke = true;
            }
            if (!woke) r.WriteReady = true;
        }
    }

    /// <summary>Forgets closed sockets, waking whoever still waits on one.</summary>
    private void Sweep()
    {
        _nextSweep = Stopwatch.GetTimestamp() + s_sweepInterval;
        List<Registration>? closed = null;
        foreach (var (fd, r) in _registrations)
        {
            if (!r.Handle.IsClosed) continue;
            (closed ??= new()).Add(r);
            _registrations.Remove(fd); // removing the current entry is allowed while enumerating; adding is not
            Unwatch(r);
        }
        if (closed == null) return;
        // After the walk: ending a wait may run its continuation right here (a stackless waiter's await with
        // ConfigureAwait(false)), and that code may wait on another socket, which registers it.
        foreach (var r in closed) AbortWaiters(r);
    }

    private static void Watch(Registration r)
    {
        using (LowLevel.Parking.SuppressCooperation())
        lock (s_watchersLock)
        {
            if (s_watchers.TryGetValue(r.Handle, out var first)) r.NextWatcher = first;
            s_watchers.AddOrUpdate(r.Handle, r);
        }
    }

    private static void Unwatch(Registration r)
    {
        using (LowLevel.Parking.SuppressCooperation())
        lock (s_watchersLock)
        {
            if (!s_watchers.TryGetValue(r.Handle, out var first)) return;
            if (ReferenceEquals(first, r))
            {
                if (r.NextWatcher is { } next) s_watchers.AddOrUpdate(r.Handle, next);
                else s_watchers.Remove(r.Handle);
                return;
            }
            for (var prev = first; prev.NextWatcher is { } cur; prev = cur)
                if (ReferenceEquals(cur, r))
                {
                    prev.NextWatcher = r.NextWatcher;
                    return;
                }
        }
    }

    /// <summary>
    /// Ends at once the waits on <paramref name="handle"/>, which has just been closed, in every reactor that watches it:
    /// parked greenlets wake with <see cref="Readiness.Closed"/>, stackless waits complete. Safe from any thread: each
    /// reactor does it on its own baton holder, as a hub callback (so no waiter's code runs inside the closer's call).
    /// Nothing when the handle is still open (a Socket that did not own it) or nobody watches it.
    /// </summary>
    public static void EndWaitsOnClosed(SafeHandle handle)
    {
        if (!handle.IsClosed || !s_watchers.TryGetValue(handle, out _)) return; // lock-free: most sockets closed were never waited on
        using (LowLevel.Parking.SuppressCooperation())
        lock (s_watchersLock)
        {
            if (!s_watchers.TryGetValue(handle, out var first)) return;
            for (var r = first; r != null; r = r.NextWatcher)
                r.Owner._hub.PostItem(RunItem.ForCallback(static x => ((Registration)x!).Owner.Forget((Registration)x!), r));
        }
    }

    /// <summary>On the baton holder: drops <paramref name="r"/> (if still current) and ends its waits.</summary>
    private void Forget(Registration r)
    {
        if (_events == null || !_registrations.TryGetValue(r.Fd, out var current) || !ReferenceEquals(current, r)) return;
        _registrations.Remove(r.Fd);
        Unwatch(r);
        AbortWaiters(r);
    }

    private void AbortWaiters(Registration r)
    {
        // Queued calls go on, each in turn, and find the socket closed: OperationAborted, as .NET fails the calls it queued.
        foreach (bool write in (ReadOnlySpan<bool>)[false, true])
        {
            r.TurnHeld(write) = false;
            while (r.Queued(write) is { Count: > 0 } queue) queue.Dequeue().Hand();
        }
        r.WakeParked(_hub, write: false, s_closed);
        r.WakeParked(_hub, write: true, s_closed);
        r.AsyncReader?.Complete(Readiness.Closed);
        r.AsyncWriter?.Complete(Readiness.Closed);
    }

    public void Dispose()
    {
        if (_events == null) return;
        foreach (var r in _registrations.Values.ToArray()) // a continuation run by Complete may register another socket
        {
            Unwatch(r);
            r.AsyncReader?.Complete(Readiness.Closed);
            r.AsyncWriter?.Complete(Readiness.Closed);
        }
        EventFd.Dispose(); // closed now, or by a post from another thread still writing it (SharedEventFd)
        Epoll.Close(_epfd);
        NativeMemory.Free(_events);
        NativeMemory.Free(_idleEvents);
        _events = null;
        _idleEvents = null;
        _registrations.Clear();
    }
}
