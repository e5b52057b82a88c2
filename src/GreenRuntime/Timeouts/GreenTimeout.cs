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
// Rejected: throwing from the timer callback into the greenlet "now" (impossible without stack switching), and a
// per-call timeout parameter threaded through every blocking API (gevent's Timeout exists because blocking calls
// nest arbitrarily deep in user code).

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
/// arrives. Cooperative I/O that owns a CancellationToken cancels the operation as well.</para>
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
    private CancellationTokenSource? _token;

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
    internal bool Raised { get; set; }

    /// <summary>Whether the deadline has passed and the timeout fired (whether or not the exception was raised yet).</summary>
    public bool Expired { get; private set; }

    /// <summary>
    /// A token cancelled when the timeout expires, so async code and foreign Tasks started inside the scope can stop
    /// too: <c>await httpClient.GetAsync(url, t.Token)</c>. Hub-only.
    /// </summary>
    /// <remarks>Already cancelled if the timeout expired before the token was asked for; never cancelled if the scope
    /// was disposed first. Its callbacks run on the hub when the timer fires: they must not block.</remarks>
    public CancellationToken Token
    {
        get
        {
            if (_token != null) return _token.Token;
            if (Expired) return new CancellationToken(true);
            _hub.AssertOnHub();
            return (_token = new CancellationTokenSource()).Token;
        }
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
        Deliver();
        if (_token != null)
        {
            try
            {
                _token.Cancel();
            }
            catch (AggregateException e)
            {
                Log.CallbackFailed(_hub.Logger, e, "GreenTimeout.Token callback");
            }
        }
    }

    // The numbered steps of the header comment.
    private void Deliver()
    {
        var g = _greenlet;
        if (g.IsStackless)
        {
            // Step 2, only for the waits begun inside this scope (see "Stackless greenlets"). Nothing is left pending
            // otherwise: the scope's own code raises at its next blocking point (Greenlet.StickyException), and code
            // the greenlet runs outside the scope must not.
            if (g.State != GreenletState.Dead && g.ShieldDepth == 0) g.FailAsyncWaits(Exception, this);
            return;
        }
        switch (g.State)
        {
            case GreenletState.Dead:
                return;
            case GreenletState.Parked when g.ShieldDepth > 0:
                return; // shielded: the expired scope raises after the last shield closes
            case GreenletState.Parked:
                _hub.TryWakeCancelling(g, Exception);
                return;
            case GreenletState.Awaiting when g.ShieldDepth > 0:
                return; // as Parked: a shield of its running step holds it back
            case GreenletState.Awaiting:
                if (g.FailAsyncWaits(Exception) == 0) SetPending(g);
                return;
            case GreenletState.Ready when (g.ResumeValue != null || g.ResumeError != null) && _deferrals < MaxDeferrals:
                _deferrals++;
                _hub.PostAction(() =>
                {
                    if (!_cancelled) Deliver();
                });
                return;
            default:
                SetPending(g);
                return;
        }
    }

    private void SetPending(Greenlet g)
    {
        if (g.PendingException == null) g.PendingException = Exception;
    }

    /// <summary>Describes the timeout for logs.</summary>
    public override string ToString() => $"<GreenTimeout {Duration} {(Expired ? "expired" : Pending ? "pending" : "cancelled")} for {_greenlet}>";
}
