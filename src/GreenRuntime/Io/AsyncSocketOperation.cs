// One async socket call of a stackless greenlet, completed through the hub's reactor.
//
// Design: the caller has already made the non-blocking system call once and got EAGAIN (the synchronous fast path
// costs no object). This operation then loops on the baton holder:
//   1. a kill or an expired GreenTimeout pending for the owner ends it (the blocking point's rule);
//   2. it waits on the reactor (Reactor.WaitAsync) for the direction it needs, tracked as one of the owner's
//      Task-form waits so a kill or a timeout can end it;
//   3. the reactor completes that wait on the baton holder, inside its poll, and calls OnReady right there (a direct
//      callback: a Task continuation would be queued to the thread pool whenever the poll runs under a
//      SynchronizationContext other than the default one): it retries the system call;
//   4. done (bytes, the end of the stream, an error): the ValueTask's source is completed, and its continuation
//      becomes a ready-queue item of the stackless greenlet, posted from this very thread (no inbox, no thread
//      pool): its own awaits ask for its synchronization context, and library code that awaits with
//      ConfigureAwait(false) (StreamReader, SslStream, HttpClient) is sent there too, where .NET's socket engine
//      would have run it on a thread-pool thread. It runs with no synchronization context, as it would there; being
//      a step of the greenlet, it may wait for a contended lock with the baton released.
// Every wait has exactly one end (readiness, the token, the socket's closing, a kill) and the operation one
// completion; everything runs on the baton holder, so its fields need no lock.
//
// Rejected: an async method (a kill could not reach the pending reactor wait, and each retry would go through the
// greenlet's context, one more ready-queue round); continuations forced onto the thread pool for ConfigureAwait(false)
// awaiters (measured: one thread-pool work item per StreamReader line, the very hop this path exists to avoid);
// running those continuations inline, inside the reactor's poll: that is scheduler code, which cannot release the
// baton, so a continuation that met a monitor won by a greenlet queued for the baton (its released wait had just
// taken it) waited for that greenlet, and the greenlet for the baton, for ever (a stackful HttpClient caller and a
// stackless one on one hub, both through the timer queue's lock; AsyncSocketReactorTests reproduces it).

using System.Net.Sockets;
using System.Threading.Tasks.Sources;
using GreenRuntime.LowLevel;
using GreenRuntime.Sync;

namespace GreenRuntime.Io;

/// <summary>What an <see cref="AsyncSocketOperation"/> does each time the socket is ready.</summary>
internal enum AsyncSocketKind : byte
{
    /// <summary>One recv into the buffer (a 1-byte peek for an empty buffer: wait until something is there).</summary>
    Receive,

    /// <summary>send until the whole buffer went out.</summary>
    Send,

    /// <summary>A non-blocking connect in progress: read its outcome once the socket is writable.</summary>
    Connect,
}

/// <summary>See the header of this file. Hub-only.</summary>
internal sealed class AsyncSocketOperation : IValueTaskSource<int>, IValueTaskSource, IAsyncWait
{
    private ManualResetValueTaskSourceCore<int> _core; // synchronous continuations: see step 4
    private readonly Reactor _reactor;
    private readonly Socket _socket;
    private readonly SafeSocketHandle _handle;
    private readonly int _fd;
    private readonly AsyncSocketKind _kind;
    private readonly Memory<byte> _buffer;
    private readonly SocketFlags _flags;
    private readonly CancellationToken _cancel;
    private readonly Func<SocketError, Exception>? _error;
    private readonly Greenlet? _owner;
    private readonly Action _onReady;
    private readonly GreenTimeout? _scope; // the caller's: the waits are begun again from the reactor's callback
    private int _transferred;
    private Task<SocketError>? _wait;
    private Exception? _interrupt;
    private bool _finished;

    /// <summary>A call that holds its socket's turn for its direction (Reactor.TryTakeTurn): its end passes the turn on.</summary>
    public bool HoldsTurn { get; init; }

    public AsyncSocketOperation(Hub hub, Reactor reactor, Socket socket, SafeSocketHandle handle, int fd, AsyncSocketKind kind,
        Memory<byte> buffer, SocketFlags flags, int transferred, CancellationToken cancel, Func<SocketError, Exception>? error)
    {
        _reactor = reactor;
        _socket = socket;
        _handle = handle;
        _fd = fd;
        _kind = kind;
        _buffer = buffer;
        _flags = flags;
        _transferred = transferred;
        _cancel = cancel;
        _error = error;
        var current = hub.CurrentGreenlet;
        _owner = current == hub.HubGreenlet ? null : current;
        _onReady = OnReady;
        _scope = GreenTimeout.FlowScope;
    }

    private bool Writes => _kind != AsyncSocketKind.Receive;

    /// <summary>Starts waiting (the caller's first attempt said EAGAIN) and returns the operation's task.</summary>
    public ValueTask<int> Start()
    {
        WaitOrFinish();
        return new ValueTask<int>(this, _core.Version);
    }

    /// <summary>The same task for a call whose result carries no value.</summary>
    public ValueTask StartUntyped()
    {
        WaitOrFinish();
        return new ValueTask(this, _core.Version);
    }

    /// <summary>Steps 1–2, and 3 at once while the reactor reports readiness without waiting (a flag it kept).</summary>
    private void WaitOrFinish()
    {
        while (true)
        {
            if (Blocking.TakePendingException(_owner, _scope) is { } pending)
            {
                Finish(pending);
                return;
            }
            Task<SocketError>? wait;
            try
            {
                wait = _reactor.WaitAsync(_handle, _fd, Writes, null, _cancel, _onReady);
            }
            catch (InvalidOperationException e)
            {
                Finish(e); // another wait of the same direction began after the caller checked: the reactor's own message
                return;
            }
            if (wait == null)
            {
                Finish(Error(SocketError.OperationAborted)); // the kernel no longer watches the fd: it was closed
                return;
            }
            if (!wait.IsCompleted)
            {
                _wait = wait;
                _owner?.TrackAsyncWait(this, _scope);
                return; // the reactor calls OnReady when the wait ends

            }
            if (!Retry(wait)) return;
        }
    }

    /// <summary>Step 3: the reactor ended the wait (on the baton holder).</summary>
    private void OnReady()
    {
        var wait = _wait!;
        _wait = null;
        _owner?.UntrackAsyncWait(this);
        if (_interrupt is { } interrupt)
        {
            Finish(interrupt);
            return;
        }
        if (Retry(wait)) WaitOrFinish();
    }

    /// <summary>A kill or an expired GreenTimeout of the owner: ends the pending wait, which finishes with it. On the baton holder.</summary>
    public void Fail(Exception error)
    {
        if (_finished || _wait is not { } wait) return;
        _interrupt = error;
        _reactor.CancelWait(_fd, Writes, wait);
    }

    /// <summary>Interprets an ended wait and, when the socket may be ready, makes the system call again. True: wait again.</summary>
    private bool Retry(Task<SocketError> wait)
    {
        if (wait.IsCanceled)
        {
            Finish(new OperationCanceledException(_cancel)); // as the original: OperationAborted under a cancelled token
            return false;
        }
        var readiness = wait.Result;
        if (readiness != SocketError.Success)
        {
            Finish(Error(readiness)); // OperationAborted: the socket was closed under the wait, as .NET reports it
            return false;
        }
        switch (_kind)
        {
            case AsyncSocketKind.Receive:
            {
                Span<byte> probe = stackalloc byte[1];
                bool peek = _buffer.IsEmpty; // a zero-byte receive waits for data and consumes none, as .NET's does
                var target = peek ? probe : _buffer.Span;
                var flags = peek ? _flags | SocketFlags.Peek : _flags;
                switch (SocketIo.Attempt(_socket, _handle, _fd, send: false, target, flags, out int n, out var error))
                {
                    case SocketIo.Outcome.WouldBlock: return true;
                    case SocketIo.Outcome.NotHandled: Finish(Error(SocketError.OperationAborted)); return false;
                }
                if (error != SocketError.Success) Finish(Error(error));
                else Finish(peek ? 0 : n);
                return false;
            }
            case AsyncSocketKind.Send:
                while (_transferred < _buffer.Length)
                {
                    switch (SocketIo.Attempt(_socket, _handle, _fd, send: true, _buffer.Span[_transferred..], _flags, out int n, out var error))
                    {
                        case SocketIo.Outcome.WouldBlock: return true;
                        case SocketIo.Outcome.NotHandled: Finish(Error(SocketError.OperationAborted)); return false;
                    }
                    if (error != SocketError.Success)
                    {
                        Finish(Error(error));
                        return false;
                    }
                    _transferred += n;
                }
                Finish(_transferred);
                return false;
            default:
                SocketError? outcome;
                try
                {
                    outcome = CooperativeSocket.ConnectOutcome(_socket);
                }
                catch (Exception e) when (e is ObjectDisposedException or SocketException)
                {
                    outcome = SocketError.OperationAborted; // closed under the connect
                }
                switch (outcome)
                {
                    case null: return true; // not connected yet: an early edge
                    case SocketError.Success: Finish(0); return false;
                    case { } error: Finish(Error(error)); return false;
                }
        }
    }

    private Exception Error(SocketError error) => _error?.Invoke(error) ?? new SocketException((int)error);

    private void Finish(int result)
    {
        End();
        _core.SetResult(result);
    }

    private void Finish(Exception error)
    {
        End();
        if (_kind == AsyncSocketKind.Connect) CooperativeSocket.ForgetPendingConnect(_socket); // cancelled, killed, failed
        _core.SetException(error);
    }

    private void End()
    {
        _finished = true;
        if (HoldsTurn) _reactor.ReleaseTurn(_handle, _fd, Writes);
    }

    /// <summary>Step 4's routing: a continuation that asked for no context becomes a step of the owner, run with none.</summary>
    private void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        if (_owner?.SyncContext is not { } owner || HasSchedulingContext(flags))
        {
            _core.OnCompleted(continuation, state, token, flags);
            return;
        }
        var context = (flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0 ? ExecutionContext.Capture() : null;
        _core.OnCompleted(static s => ((ContextFreeStep)s!).Post(), new ContextFreeStep(owner, continuation, state, context), token, ValueTaskSourceOnCompletedFlags.None);
    }

    /// <summary>Whether a continuation registered now with <paramref name="flags"/> asked for a context to be posted to.</summary>
    private static bool HasSchedulingContext(ValueTaskSourceOnCompletedFlags flags)
    {
        if ((flags & ValueTaskSourceOnCompletedFlags.UseSchedulingContext) == 0) return false;
        var sync = SynchronizationContext.Current;
        return (sync != null && sync.GetType() != typeof(SynchronizationContext)) || TaskScheduler.Current != TaskScheduler.Default;
    }

    /// <summary>A continuation that asked for no context, run as a step of the greenlet that owns the operation.</summary>
    private sealed class ContextFreeStep(SynchronizationContext owner, Action<object?> continuation, object? state, ExecutionContext? context)
    {
        public void Post() => owner.Post(static s => ((ContextFreeStep)s!).Run(), this);

        private void Run()
        {
            var saved = SynchronizationContext.Current;
            SynchronizationContext.SetSynchronizationContext(null); // as on the thread-pool thread .NET would have used
            try
            {
                if (context is null) continuation(state);
                else ExecutionContext.Run(context, static s => ((ContextFreeStep)s!).Invoke(), this);
            }
            finally
            {
                SynchronizationContext.SetSynchronizationContext(saved);
            }
        }

        private void Invoke() => continuation(state);
    }

    int IValueTaskSource<int>.GetResult(short token) => _core.GetResult(token);

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _core.GetStatus(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        OnCompleted(continuation, state, token, flags);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        OnCompleted(continuation, state, token, flags);
}
