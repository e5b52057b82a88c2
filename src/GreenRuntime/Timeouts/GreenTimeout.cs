// GreenTimeout: gevent's Timeout for greenlets.
//
// Design: a timeout is a hub timer bound to one greenlet. It never interrupts running code (nothing can: the
// greenlet holds the baton); it raises at the greenlet's next blocking point after the deadline. When the timer
// fires (a hub callback), the greenlet is in one of these states and the timeout acts accordingly:
//   1. Parked (a blocking call: Sleep, Get, Wait, Join, Green.Wait/I/O...): wake that park with the exception.
//      Every park has exactly one wake, so if an event, an item or a kill won the race, the timeout loses and
//      is delivered at the next blocking point instead (step 3 or 4).
//   2. Awaiting (a stackless greenlet awaiting this library's WaitAsync/GetAsync/PutAsync/AcquireAsync): fault those
//      tasks with the exception. Awaiting anything else: as step 4.
//   3. Ready, woken with a value (an item, a permit) that it has not seen yet: raising now would lose that value,
//      so the timeout tries again after the greenlet has run (a posted hub callback), at most a few times.
//   4. Otherwise (Ready from a yield or sleep, or an await of a foreign task): set the greenlet's pending exception,
//      which the core throws at its next BeginPark/EndPark.
// Cancel withdraws the timer and a pending exception not yet thrown; it cannot un-raise one already delivered.
//
// Level-triggered: the steps above are the first delivery. From then until the scope is disposed, every blocking
// point of the greenlet raises the exception again (Greenlet.StickyException, checked by BeginPark and the Task-form
// waits), so `try { Thread.Sleep(1000); } catch (TimeoutException) { }` followed by more blocking calls still
// leaves the scope promptly. The greenlet's open scopes form a stack (Outer links, newest first); when several have
// expired, the outermost one raises, as its exception is the one that must unwind through the inner scopes.
//
// Stackless greenlets: several flows of a stackless greenlet's code run at once (an awaited call, and a loop it
// started earlier and never awaited), so its scopes are not one stack but belong to the flow that opened them: an
// AsyncLocal (FlowScope) carries the innermost one through the awaits of the code that opened it and into the async
// calls made from there, and each Task-form wait remembers the scope it began in. When the timer fires, step 2 fails
// only the waits begun inside this scope, and the level-triggered rule raises only at blocking points of flows inside
// it; step 4 sets nothing pending, which any flow's next blocking point would have taken. A kill still ends them all.
//
// The token: Token is handed to foreign operations (docs/patching.md advises it), so its callbacks are foreign code,
// and some take locks (a Dataflow receive's cleanup takes its block's lock). Cancelled inside Fire, a hub callback, such
// a callback waited for the lock with the baton held, while the greenlet holding it was parked in a cooperative lock
// wait: the hub stopped for good (3 of 45 runs of ten greenlets receiving under 1–5 ms timeouts). So the token is never
// cancelled on the hub: when step 1 woke the stackful greenlet, the greenlet cancels it itself as it resumes, shielded
// and before the exception unwinds the operation's code (which would unregister the callbacks first), as a kill's
// woken greenlet cancels its own token (CancelTokensBeforeUnwinding, from KillLinkedSource.CancelQueued); otherwise the
// runtime's cancelling thread does (LowLevel/GatedCancellationSource.cs), and a greenlet that resumes first claims
// the cancel. The runtime's own registrations (KillLinkedSource) use ExpiryToken, cancelled in Fire: they only queue.
// A task wait that the timeout ended then settles as a kill's does (KillLinkedSource.Settle): while the token, once
// asked for, has been cancelled, the wait waits for its task, at most 5 s, and a task that completed anyway is its
// result, the timeout staying pending. Raised at once, the wait dropped what the operation did: a channel's read
// completes its task through the thread pool a moment after it took the item, and 2–50 of 300 items read under
// 1–5 ms timeouts were lost in every run; writes into a full bounded channel were delivered while their callers saw
// the timeout. Threads with a CancellationTokenSource lose none.
//
// Rejected: throwing from the timer callback into the greenlet "now" (impossible without stack switching), and a
// per-call timeout parameter threaded through every blocking API (gevent's Timeout exists because blocking calls
// nest arbitrarily deep in user code).

using GreenRuntime.LowLevel;
using GreenRuntime.Scheduling;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// Limits how long a block of greenlet code may run, like gevent's <c>Timeout</c>: after the deadline, the next
/// blocking call the greenlet makes (or the one it is in) throws <see cref="GreenTimeoutException"/> — or the
/// exception given to <see cref="Start"/>.
/// </summary>
/// <remarks>
/// <para>Timeouts fire only at blocking points: a greenlet busy computing is interrupted at its next cooperative call
/// (Sleep, Yield, Join, a queue, an event, a lock, Green.Wait, patched I/O).</para>
/// <para>Nested timeouts are independent; the one whose deadline comes first raises, and its exception propagates
/// through the inner scopes (their <c>Dispose</c> cancels them). Tell them apart with
/// <see cref="GreenTimeoutException.Scope"/>: <c>catch (GreenTimeoutException e) when (e.Scope == t)</c>.</para>
/// <para>A timeout that fires while the greenlet waits in <see cref="Green.Wait(Task, TimeSpan?)"/> (or a patched I/O
/// call built on it) ends the <em>wait</em>: the greenlet resumes with the exception at once. The .NET operation
/// itself is not aborted by this (a Task cannot be cancelled from outside); its completion is ignored when it
/// arrives. Cooperative I/O that owns a CancellationToken cancels the operation as well. An operation given
/// <see cref="Token"/> is waited for (at most 5 seconds) once the token is cancelled, and its result is the wait's if it
/// completed anyway: see <see cref="Token"/>.</para>
/// <para>In stackless code the timeout faults the task of a pending <c>WaitAsync</c>/<c>GetAsync</c>/<c>PutAsync</c>/<c>AcquireAsync</c>
/// of this library; an await of another task is not interrupted, and the exception is raised at the next such call.
/// Only waits of the code inside the scope count: the scope flows through that code's awaits like an
/// <see cref="AsyncLocal{T}"/>, and a loop the greenlet started before the scope is not interrupted.</para>
/// <para>The silent form (gevent's <c>Timeout(t, False)</c>) is <see cref="RunSilently"/> or <see cref="Green.WithTimeout{T}(TimeSpan, Func{T}, T)"/>.</para>
/// </remarks>
/// <example>
/// <code>
/// using (var t = GreenTimeout.Start(TimeSpan.FromSeconds(1)))
/// {
///     var item = queue.Get();            // throws GreenTimeoutException after 1 s
/// }
/// bool finished = GreenTimeout.RunSilently(TimeSpan.FromSeconds(1), () => DoWork());
/// </code>
/// </example>
public sealed class GreenTimeout : IDisposable
{
    private const int MaxDeferrals = 8;

    private readonly Hub _hub;
    private readonly Greenlet _greenlet;
    private HubTimer? _timer;
    private int _deferrals;
    private bool _cancelled;
    private bool _open; // on its greenlet's scope stack
    private TokenSource? _token; // Token: handed out to code outside the runtime
    private CancellationTokenSource? _expiry; // ExpiryToken: the runtime's own registrations
    private bool _tokenCancelDeferred; // hub-only: Fire left the cancel of Token to the greenlet (see "The token" above)

    /// <summary>The scope opened before this one on the same greenlet and still open (the scope stack's next link).</summary>
    internal GreenTimeout? Outer;

    // The scopes of a stackless greenlet's code, as its flow sees them (see "Stackless greenlets" above).
    private static readonly AsyncLocal<GreenTimeout?> s_flowScope = new();

    /// <summary>The innermost scope of the running stackless code's flow (null in stackful code: its scopes are its
    /// greenlet's stack, <see cref="Outer"/>).</summary>
    internal static GreenTimeout? FlowScope => s_flowScope.Value;

    /// <summary>The scope of the flow that this one was opened in (stackless greenlets only).</summary>
    internal GreenTimeout? FlowOuter { get; private set; }

    /// <summary>Whether the scope is still open (not disposed).</summary>
    internal bool IsOpen => _open;

    /// <summary>Whether a wait begun in the flow whose innermost scope was <paramref name="scope"/> is inside this one.</summary>
    internal bool Contains(GreenTimeout? scope)
    {
        if (!_greenlet.IsStackless) return true; // a stackful greenlet has one wait at a time, inside all its scopes
        for (var s = scope; s != null; s = s.FlowOuter)
            if (s == this) return true;
        return false;
    }

    private GreenTimeout(Hub hub, Greenlet greenlet, TimeSpan duration, Exception? exception)
    {
        _hub = hub;
        _greenlet = greenlet;
        Duration = duration;
        Exception = exception ?? new GreenTimeoutException(this);
    }

    /// <summary>
    /// Starts a timeout for the current greenlet: after <paramref name="timeout"/> it raises
    /// <paramref name="exception"/> (default: a <see cref="GreenTimeoutException"/> whose <see cref="GreenTimeoutException.Scope"/>
    /// is the returned object) at the greenlet's next blocking point. Dispose the result to cancel it.
    /// </summary>
    /// <param name="timeout">The deadline from now; <see cref="Timeout.InfiniteTimeSpan"/> never fires.</param>
    /// <param name="exception">The exception to raise instead of a <see cref="GreenTimeoutException"/>.</param>
    /// <exception cref="InvalidOperationException">Called from a link/timer callback (there is no greenlet to interrupt).</exception>
    public static GreenTimeout Start(TimeSpan timeout, Exception? exception = null)
    {
        Blocking.ValidateTimeout(timeout);
        var hub = Hub.Current; // a thread with no hub gets one, as Green.Sleep does
        var g = hub.CurrentGreenlet;
        if (g == hub.HubGreenlet)
            throw new InvalidOperationException("GreenTimeout.Start cannot be called from a link, timer or Hub.Post callback: there is no greenlet to interrupt. Spawn a greenlet and start the timeout there.");
        var t = new GreenTimeout(hub, g, timeout, exception);
        t.Outer = g.InnermostTimeout;
        g.InnermostTimeout = t;
        t._open = true;
        if (g.IsStackless)
        {
            // Set in the caller's flow (this method is not async): the awaits that follow in it, and the async calls it
            // makes from here on, carry the scope; code it started before does not.
            t.FlowOuter = s_flowScope.Value;
            s_flowScope.Value = t;
        }
        if (timeout != Timeout.InfiniteTimeSpan)
            t._timer = hub.AddTimer(timeout, static s => ((GreenTimeout)s!).Fire(), t);
        return t;
    }

    /// <summary>
    /// Runs <paramref name="body"/> under a timeout and returns false if the timeout interrupted it — the silent
    /// form: only this timeout's own exception is swallowed (an outer timeout's still propagates).
    /// </summary>
    public static bool RunSilently(TimeSpan timeout, Action body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var t = Start(timeout);
        try
        {
            body();
            return true;
        }
        catch (Exception e) when (GreenTimeoutException.RaisedBy(e, t) != null)
        {
            // Also when library code wrapped it (see GreenTimeoutException.RaisedBy).
            return false;
        }
        finally
        {
            t.Cancel();
        }
    }

    /// <summary>The silent form for async code (a stackless greenlet): completes with false if the timeout interrupted <paramref name="body"/>.</summary>
    public static async Task<bool> RunSilentlyAsync(TimeSpan timeout, Func<Task> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var t = Start(timeout);
        try
        {
            await body();
            return true;
        }
        catch (GreenTimeoutException e) when (e.Scope == t)
        {
            return false;
        }
        finally
        {
            t.Cancel();
        }
    }

    /// <summary>How long after <see cref="Start"/> the timeout fires.</summary>
    public TimeSpan Duration { get; }

    /// <summary>The exception it raises.</summary>
    public Exception Exception { get; }

    /// <summary>The greenlet it interrupts.</summary>
    public Greenlet Greenlet => _greenlet;

    /// <summary>Whether the exception has been thrown in the greenlet at a blocking point (Greenlet.Raising).</summary>
    internal bool Raised => Raises > 0;

    /// <summary>How many times the exception has been thrown in the greenlet (Greenlet.Raising).</summary>
    internal int Raises;

    /// <summary>Whether the deadline has passed and the timeout fired (whether or not the exception was raised yet).</summary>
    public bool Expired { get; private set; }

    /// <summary>
    /// A token cancelled when the timeout expires, so async code and foreign Tasks started inside the scope can stop
    /// too: <c>await httpClient.GetAsync(url, t.Token)</c>, <c>reader.ReadAsync(t.Token).AsTask().Result</c>. Hub-only.
    /// </summary>
    /// <remarks>
    /// <para>Already cancelled if the timeout expired before the token was asked for; never cancelled if the scope was
    /// disposed first.</para>
    /// <para>It is not cancelled on the hub: when the timeout wakes its stackful greenlet from a blocking call, the
    /// greenlet cancels the token itself, shielded, as it resumes and before the exception unwinds anything; otherwise a
    /// thread of the runtime's cancels it. So its callbacks may block and take locks (a Dataflow block's receive takes
    /// the block's lock), but they may run on another thread than the greenlet's hub, where hub-only members throw.</para>
    /// <para>A task wait the timeout's expiry ends (<c>Task.Wait</c>, <c>.Result</c> under <c>Patch.All()</c>, <see cref="Green.Wait(Task, TimeSpan?)"/>)
    /// in a scope whose token was asked for waits, shielded, for its task to end, at most 5 seconds, as a thread whose
    /// token is cancelled stays in its wait: an operation given the token that completed anyway (an item read from a
    /// channel) is the wait's result, and the expired timeout stays pending, raised at the next blocking point inside
    /// the scope or dropped when the scope is disposed first. An operation that ended with the cancellation raises the
    /// timeout. A later wait inside the expired scope raises at once, as before.</para>
    /// </remarks>
    public CancellationToken Token
    {
        get
        {
            if (_token != null) return _token.Token;
            if (Expired) return new CancellationToken(true);
            _hub.AssertOnHub();
            GatedCancellationSource.EnsureCancellerStarted(); // here, not in Fire: a hub callback must not start a thread
            return (_token = new TokenSource(this)).Token;
        }
    }

    /// <summary>A token cancelled on the hub as the timeout fires, for the runtime's own registrations, whose callbacks only
    /// hand work on (KillLinkedSource); <see cref="Token"/> is cancelled off the hub.</summary>
    internal CancellationToken ExpiryToken
    {
        get
        {
            if (_expiry != null) return _expiry.Token;
            if (Expired) return new CancellationToken(true);
            return (_expiry = new CancellationTokenSource()).Token;
        }
    }

    /// <summary>On <paramref name="greenlet"/>, a stackful one, as it resumes with a kill or timeout and before the exception
    /// unwinds: cancels, shielded, the tokens of its expired scopes that nobody has begun to cancel (see "The token").</summary>
    internal static void CancelTokensBeforeUnwinding(Greenlet greenlet)
    {
        if (greenlet.IsStackless || greenlet.ExpiredTimeouts == 0) return;
        List<TokenSource>? due = null;
        for (var t = greenlet.InnermostTimeout; t != null; t = t.Outer)
        {
            if (!t.Expired || t._token is not { CancelClaimed: false } token) continue;
            t._tokenCancelDeferred = false;
            (due ??= new()).Add(token);
        }
        if (due == null) return;
        // Collected first: a callback may dispose a scope, which unlinks it from the chain walked above.
        using (new CancellationShield(greenlet))
            foreach (var token in due)
                token.CancelQuietly();
    }

    /// <summary>Whether an open scope of <paramref name="greenlet"/> (of the running flow, on a stackless greenlet) gave out
    /// its <see cref="Token"/> and has cancelled it, or begun to, and has raised its exception once at most: a task wait
    /// that this first raise ended then waits for its task (KillLinkedSource.Settle).</summary>
    /// <remarks>Only the first: the operation that was given the token was under way then. A later wait in the expired
    /// scope is raised at its start (level-triggered), before its task could have seen the token, and waiting up to
    /// 5 s there for a task that may ignore the token would only delay leaving the scope.</remarks>
    internal static bool TokenCancelledFor(Greenlet greenlet)
    {
        for (var t = InnermostOf(greenlet); t != null; t = t.OuterInFlow)
            if (t._token is { IsCancellationRequested: true } && t.Raises <= 1) return true;
        return false;
    }

    /// <summary>The end of a cancel of the <see cref="Token"/> of one of <paramref name="greenlet"/>'s scopes still running
    /// on another thread; null if there is none.</summary>
    internal static Task? TokenCancelEnded(Greenlet greenlet)
    {
        for (var t = InnermostOf(greenlet); t != null; t = t.OuterInFlow)
            if (t._token?.CancelEnded() is { } ended) return ended;
        return null;
    }

    private static GreenTimeout? InnermostOf(Greenlet greenlet) => greenlet.IsStackless ? FlowScope : greenlet.InnermostTimeout;

    private GreenTimeout? OuterInFlow => _greenlet.IsStackless ? FlowOuter : Outer;

    /// <summary><see cref="Token"/>'s source: cancelled once, by the greenlet or the runtime's cancelling thread.</summary>
    private sealed class TokenSource(GreenTimeout owner) : GatedCancellationSource
    {
        protected override void CallbacksFailed(AggregateException e) =>
            Log.CallbackFailed(owner._hub.Logger, e, "GreenTimeout.Token callback");
    }

    /// <summary>Whether it is still waiting for its deadline.</summary>
    public bool Pending => _timer != null && !_timer.IsCancelled;

    /// <summary>Stops the timeout. Idempotent. Withdraws its exception if it fired but was not raised yet. Hub-only.</summary>
    public void Cancel()
    {
        _hub.AssertOnHub();
        _cancelled = true;
        _timer?.Cancel();
        _timer = null;
        if (_tokenCancelDeferred)
        {
            // Disposed before the greenlet resumed with it (it cannot, but the cancel must not depend on that).
            _tokenCancelDeferred = false;
            _token!.QueueCancel();
        }
        CloseScope();
        if (ReferenceEquals(_greenlet.PendingException, Exception) && _greenlet.State != GreenletState.Dead)
            _greenlet.PendingException = null;
    }

    /// <summary>Same as <see cref="Cancel"/>, for <c>using</c>.</summary>
    public void Dispose() => Cancel();

    /// <summary>Takes this scope off its greenlet's scope stack (wherever it is: scopes may be disposed out of order).</summary>
    private void CloseScope()
    {
        if (!_open) return;
        _open = false;
        if (Expired) _greenlet.ExpiredTimeouts--;
        GreenTimeout? newer = null;
        for (var t = _greenlet.InnermostTimeout; t != null; newer = t, t = t.Outer)
        {
            if (t != this) continue;
            if (newer == null) _greenlet.InnermostTimeout = Outer;
            else newer.Outer = Outer;
            break;
        }
        Outer = null;
        if (s_flowScope.Value == this) s_flowScope.Value = FlowOuter; // disposed in the flow that opened it: the usual case
    }

    private void Fire()
    {
        _timer = null;
        Expired = true;
        if (_open) _greenlet.ExpiredTimeouts++; // from now on every blocking point in the scope raises
        bool woke = Deliver();
        if (_expiry != null)
        {
            try
            {
                _expiry.Cancel();
            }
            catch (AggregateException e)
            {
                Log.CallbackFailed(_hub.Logger, e, "GreenTimeout expiry callback");
            }
        }
        // Never here, on the hub (see "The token" above). A greenlet this timeout woke resumes with it, and its EndPark
        // cancels the token before anything unwinds (CancelTokensBeforeUnwinding); otherwise the cancelling thread does.
        if (_token != null)
        {
            if (woke) _tokenCancelDeferred = true;
            else _token.QueueCancel();
        }
    }

    // The numbered steps of the header comment. Returns true when it woke a stackful greenlet's park with the exception,
    // so that the greenlet resumes with it.
    private bool Deliver()
    {
        var g = _greenlet;
        if (g.IsStackless)
        {
            // Step 2, only for the waits begun inside this scope (see "Stackless greenlets"). Nothing is left pending
            // otherwise: the scope's own code raises at its next blocking point (Greenlet.StickyException), and code
            // the greenlet runs outside the scope must not.
            if (g.State != GreenletState.Dead && g.ShieldDepth == 0) g.FailAsyncWaits(Exception, this);
            return false;
        }
        switch (g.State)
        {
            case GreenletState.Dead:
                return false;
            case GreenletState.Parked when g.ShieldDepth > 0:
                return false; // shielded: the expired scope raises after the last shield closes
            case GreenletState.Parked:
                return _hub.TryWakeCancelling(g, Exception);
            case GreenletState.Awaiting when g.ShieldDepth > 0:
                return false; // as Parked: a shield of its running step holds it back
            case GreenletState.Awaiting:
                if (g.FailAsyncWaits(Exception) == 0) SetPending(g);
                return false;
            case GreenletState.Ready when (g.ResumeValue != null || g.ResumeError != null) && _deferrals < MaxDeferrals:
                _deferrals++;
                _hub.PostAction(() =>
                {
                    if (!_cancelled) Deliver();
                });
                return false;
            default:
                SetPending(g);
                return false;
        }
    }

    private void SetPending(Greenlet g)
    {
        if (g.PendingException == null) g.PendingException = Exception;
    }

    /// <summary>Describes the timeout for logs.</summary>
    public override string ToString() => $"<GreenTimeout {Duration} {(Expired ? "expired" : Pending ? "pending" : "cancelled")} for {_greenlet}>";
}
