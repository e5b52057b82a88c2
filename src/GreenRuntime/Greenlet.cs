using System.Diagnostics;
using System.Runtime.ExceptionServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

/// <summary>
/// A unit of cooperative work run by a <see cref="Hub"/>, like gevent's <c>Greenlet</c>. Stackful greenlets
/// run synchronous code (and keep a parked OS thread while suspended); stackless ones run async code whose
/// continuations run on the hub. Both have the same API and are awaitable.
/// </summary>
/// <remarks>
/// <para>A greenlet belongs to the hub of the thread that created it. Its methods are hub-only, except
/// <see cref="Kill"/>, which any thread may call.</para>
/// <para><see cref="Kill"/> is idempotent and works on unstarted and dead greenlets: killed before it starts,
/// the body never runs and the links still fire exactly once. A kill with the default
/// <see cref="GreenletExit"/> counts as success; any other exception makes the greenlet a failure with it.
/// The exception is raised at the greenlet's current or next blocking point; a greenlet busy in a CPU loop
/// is killed when it next blocks or yields.</para>
/// <para>Link callbacks run on the hub, in the order they were added, after the greenlet finished; they must
/// not block. Links added after it finished still fire.</para>
/// </remarks>
[DebuggerDisplay("{ToString(),nq} {State} {WaitReason}")]
public partial class Greenlet
{
    private static long s_nextId;

    private readonly Delegate? _body;
    private protected Delegate Body => _body!;
    private object? _value;
    private Exception? _exception;
    private bool _successful;
    // Links: the first one inline (most greenlets have one: a joiner or a pool), the rest in a list, so that a
    // spawn+join does not allocate a list per greenlet.
    private (Action<Greenlet>? Callback, LinkKind Kind) _firstLink;

    /// <summary>
    /// State most greenlets never use (a given name, a second link, a delayed start, a spawn stack, Task-form
    /// waits, greenlet-locals), kept out of line and allocated on first use: a greenlet is one object per
    /// sleeper in a 100k-sleeper workload, and these six fields would be a fifth of it.
    /// </summary>
    private sealed class RareState
    {
        public string? Name;
        public List<(Action<Greenlet> Callback, LinkKind Kind)>? MoreLinks;
        public HubTimer? StartTimer;
        public string? SpawnStack;
        public List<Sync.IAsyncWait>? AsyncWaits;
        public Dictionary<object, object?>? Locals;
    }

    private RareState? _rare;
    private RareState Rare => _rare ??= new();
    private List<(Action<Greenlet> Callback, LinkKind Kind)>? _moreLinks => _rare?.MoreLinks;

    // Scheduler state: written only by the baton holder of Hub.
    internal GreenletState State_ = GreenletState.Created;
    internal int ParkSequence;
    internal long ParkedAt;
    internal object? ResumeValue;
    internal Exception? ResumeError;
    internal Exception? PendingException;
    /// <summary>The exception of the first kill, to recognise it when code between the kill and the greenlet's
    /// end wrapped it (SetResult).</summary>
    internal Exception? KilledWith;
    /// <summary>True while its carrier runs a call with the baton released (Hub.Blocking.cs): only that call's return may wake it.</summary>
    internal bool OutsideBaton;
    /// <summary>While <see cref="OutsideBaton"/> in an interruptible wait: how a kill or timeout interrupts it (ReleasedInterrupt.cs).</summary>
    internal ReleasedInterrupt? ReleasedInterrupt;
    internal Carrier? Carrier;
    internal bool StartedBySwitch;
    internal HubTimer? StartTimer
    {
        get => _rare?.StartTimer;
        set { if (value != null || _rare != null) Rare.StartTimer = value; }
    }
    internal long FinishSequence;
    internal Greenlet? PrevAlive, NextAlive;
    internal HubSynchronizationContext? SyncContext;
    internal Task? StacklessTask;
    internal string? SpawnStack => _rare?.SpawnStack;

    /// <summary>Creates a stackful greenlet that will run <paramref name="body"/>; it does not start until <see cref="Start"/> (or <see cref="Switch"/>).</summary>
    public Greenlet(Action body, string? name = null) : this((Delegate)body, name, stackless: false) { }

    private protected Greenlet(Delegate body, string? name, bool stackless)
    {
        ArgumentNullException.ThrowIfNull(body);
        Hub = Hub.Current;
        _body = body;
        Id = Interlocked.Increment(ref s_nextId);
        if (name != null) Rare.Name = name;
        IsStackless = stackless;
        Parent = Hub.CurrentGreenlet;
        if (stackless) SyncContext = new HubSynchronizationContext(this);
        if (Hub.Options.TrackSpawnStacks) Rare.SpawnStack = new StackTrace(2, false).ToString();
    }

    private Greenlet(Hub hub, string name)
    {
        Hub = hub;
        Id = Interlocked.Increment(ref s_nextId);
        Rare.Name = name;
    }

    internal static Greenlet CreateSpecial(Hub hub, string name) => new(hub, name);

    /// <summary>The hub that runs this greenlet.</summary>
    public Hub Hub { get; }

    /// <summary>A process-unique number.</summary>
    public long Id { get; }

    /// <summary>The name given at creation, or <c>Greenlet-{Id}</c>.</summary>
    public string Name => _rare?.Name ?? (Rare.Name = $"Greenlet-{Id}");

    /// <summary>The greenlet that created this one. When it finishes after being entered with <see cref="Switch"/>, control returns to its parent.</summary>
    public Greenlet? Parent { get; }

    /// <summary>Whether the body is async code (<c>Func&lt;Task&gt;</c>) whose continuations run on the hub.</summary>
    public bool IsStackless { get; }

    /// <summary>Where the greenlet is in its life.</summary>
    public GreenletState State { get => State_; internal set => State_ = value; }

    /// <summary>Why the greenlet is parked, or <see cref="WaitReason.None"/>.</summary>
    public WaitReason WaitReason { get; internal set; }

    /// <summary>Whether <see cref="Start"/>, <see cref="StartLater"/> or <see cref="Switch"/> has been called (stays true after it finished).</summary>
    public bool Started => _startedFlag;
    private bool _startedFlag;

    /// <summary>Whether the greenlet has finished (or was killed before it started): the result is available.</summary>
    public bool Ready => State_ == GreenletState.Dead;

    /// <summary>Whether the greenlet is finished or will never run. Same as <see cref="Ready"/>.</summary>
    public bool Dead => State_ == GreenletState.Dead;

    /// <summary>Whether it finished without an exception (a kill with <see cref="GreenletExit"/> counts as success).</summary>
    public bool Successful => Dead && _successful;

    /// <summary>The exception that ended the greenlet, or null.</summary>
    public Exception? Exception => _exception;

    /// <summary>The body's result once finished successfully (the <see cref="GreenletExit"/> if killed), else null.</summary>
    public object? Value => _value;

    /// <summary>Schedules the greenlet to run; it starts after greenlets already scheduled (FIFO). Hub-only.</summary>
    /// <exception cref="InvalidOperationException">Already started, or the hub's carrier limit is reached.</exception>
    public void Start()
    {
        Hub.AssertOnHub();
        if (State_ != GreenletState.Created || _startedFlag)
            throw new InvalidOperationException($"{this} has already been started.");
        Hub.StartGreenlet(this);
    }

    /// <summary>Schedules the greenlet to start after <paramref name="delay"/>. Hub-only.</summary>
    public void StartLater(TimeSpan delay)
    {
        Hub.AssertOnHub();
        if (delay < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(delay), delay, "The delay must not be negative.");
        if (State_ != GreenletState.Created || _startedFlag)
            throw new InvalidOperationException($"{this} has already been started.");
        _startedFlag = true;
        StartTimer = Hub.AddTimer(delay, static s =>
        {
            var g = (Greenlet)s!;
            g.StartTimer = null;
            if (g.State_ == GreenletState.Created) g.Hub.StartGreenlet(g);
        }, this);
    }

    internal void MarkStarted() => _startedFlag = true;

    /// <summary>Waits until the greenlet has finished, or the timeout elapsed. Hub-only.</summary>
    /// <returns>true if it has finished.</returns>
    public bool Join(TimeSpan? timeout = null)
    {
        Hub.AssertOnHub();
        if (Dead) return true;
        if (this == Hub.CurrentGreenlet) throw new InvalidOperationException($"{this} cannot join itself.");
        Green.JoinAll([this], timeout);
        return Dead;
    }

    /// <summary>Waits for the greenlet and returns its value, or rethrows its exception with its original stack. Hub-only.</summary>
    /// <exception cref="TimeoutException">It has not finished within <paramref name="timeout"/>.</exception>
    public object? Get(TimeSpan? timeout = null)
    {
        if (!Join(timeout))
            throw new TimeoutException($"{this} did not finish within {timeout}.");
        if (_exception != null) ExceptionDispatchInfo.Throw(_exception);
        return _value;
    }

    /// <summary>
    /// Raises <paramref name="exception"/> (default: a new <see cref="GreenletExit"/>) in the greenlet and, when
    /// <paramref name="block"/>, waits up to <paramref name="timeout"/> for it to die. Safe from any thread.
    /// </summary>
    /// <remarks>Idempotent; a no-op on a dead greenlet. On an unstarted greenlet the body never runs. Called by the
    /// greenlet on itself, it throws the exception at once. From a link or timer callback it never blocks.
    /// A stackless greenlet killed while awaiting is dead at once; its pending continuations still run (so its
    /// <c>finally</c> blocks do), but its next cooperative blocking call throws the exception.</remarks>
    public void Kill(Exception? exception = null, bool block = true, TimeSpan? timeout = null)
    {
        exception ??= new GreenletExit();
        if (!Hub.IsOnHubThread)
        {
            KillFromOtherThread(exception, block, timeout);
            return;
        }
        Hub.KillGreenlet(this, exception);
        if (block && !Dead && Hub.CanBlockHere)
            Join(timeout);
    }

    private void KillFromOtherThread(Exception exception, bool block, TimeSpan? timeout)
    {
        if (Dead) return;
        // Not disposed: the link may still fire after a timed-out wait gave up on it.
        var done = block ? new ManualResetEventSlim() : null;
        Hub.Post(() =>
        {
            Hub.KillGreenlet(this, exception);
            if (done != null) AddLink(_ => done.Set(), LinkKind.All);
        });
        done?.Wait(timeout ?? Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// Transfers control to this greenlet now, with greenlet-library semantics: the target runs at once (an
    /// unstarted one starts; one suspended in <see cref="Switch"/> returns <paramref name="value"/> there) and the
    /// caller is suspended until something switches back to it, or until a greenlet it entered this way
    /// finishes (then the caller's <see cref="Switch"/> returns that greenlet's value, or throws its exception).
    /// </summary>
    /// <returns>The value passed by whatever switched back.</returns>
    /// <exception cref="InvalidOperationException">The target is stackless, or neither unstarted nor suspended in Switch.</exception>
    public object? Switch(object? value = null)
    {
        Hub.AssertMayBlock();
        var current = Hub.CurrentGreenlet;
        if (current == this) return value;
        if (IsStackless)
            throw new InvalidOperationException($"Switch needs a stackful target; {this} is stackless. Start it and await or Join it instead.");
        bool startIt = State_ == GreenletState.Created && !_startedFlag;
        bool resumeIt = State_ == GreenletState.Parked && WaitReason == WaitReason.Switch;
        if (!startIt && !resumeIt)
            throw new InvalidOperationException($"Switch can only enter a greenlet that has not started or that is suspended in Switch; {this} is {State_}{(State_ == GreenletState.Parked ? " in " + WaitReason : "")}. Use Start, an Event or a queue to hand work to it.");
        var token = Hub.BeginPark(WaitReason.Switch);
        if (startIt)
        {
            StartedBySwitch = true;
            Hub.StartGreenlet(this, first: true);
        }
        else
        {
            Hub.TryWake(new WakeToken(this, ParkSequence), value, first: true);
        }
        return Hub.EndPark(token);
    }

    /// <summary>Calls <paramref name="callback"/> on the hub once the greenlet has finished, however it finished.</summary>
    public void Link(Action<Greenlet> callback) => AddLink(callback, LinkKind.All);

    /// <summary>Calls <paramref name="callback"/> on the hub once the greenlet has finished successfully.</summary>
    public void LinkValue(Action<Greenlet> callback) => AddLink(callback, LinkKind.Value);

    /// <summary>Calls <paramref name="callback"/> on the hub once the greenlet has failed.</summary>
    public void LinkException(Action<Greenlet> callback) => AddLink(callback, LinkKind.Exception);

    /// <summary>Removes every registration of <paramref name="callback"/> that has not fired yet.</summary>
    public void Unlink(Action<Greenlet> callback)
    {
        Hub.AssertOnHub();
        if (_firstLink.Callback == callback) _firstLink = default;
        if (_moreLinks != null) RemoveMoreLinks(callback); // the lambda's closure is allocated only when needed
    }

    private void RemoveMoreLinks(Action<Greenlet> callback)
    {
        _moreLinks?.RemoveAll(l => l.Callback == callback);
    }

    internal void AddLink(Action<Greenlet> callback, LinkKind kind)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Hub.AssertOnHub();
        if (Dead)
        {
            Hub.PostItem(RunItem.ForCallback(static s =>
            {
                var (g, cb, k) = ((Greenlet, Action<Greenlet>, LinkKind))s!;
                if (g.Matches(k)) cb(g);
            }, (this, callback, kind)));
            return;
        }
        if (_firstLink.Callback == null && _moreLinks == null) _firstLink = (callback, kind);
        else (Rare.MoreLinks ??= new()).Add((callback, kind));
    }

    private bool Matches(LinkKind kind) => kind == LinkKind.All || (kind == LinkKind.Value) == _successful;

    /// <summary>Runs the links registered before the greenlet finished. Called once, as a hub callback.</summary>
    internal void NotifyLinks()
    {
        var (first, firstKind) = _firstLink;
        var more = _moreLinks;
        _firstLink = default;
        if (_rare != null) _rare.MoreLinks = null;
        if (first != null) RunLink(first, firstKind);
        if (more != null)
            foreach (var (callback, kind) in more) RunLink(callback, kind);
    }

    private void RunLink(Action<Greenlet> callback, LinkKind kind)
    {
        if (!Matches(kind)) return;
        try
        {
            callback(this);
        }
        catch (Exception e)
        {
            Log.CallbackFailed(Hub.Logger, e, callback.Method.Name);
        }
    }

    internal bool HasLinks => _firstLink.Callback != null || _moreLinks is { Count: > 0 };

    /// <summary>Records the outcome. Called once by the hub.</summary>
    internal void SetResult(object? value, Exception? error)
    {
        // A GreenletExit raised inside blocking I/O often leaves it wrapped: NetworkStream.Read turns whatever
        // its socket call throws into an IOException, and a driver wraps that again. The greenlet was still
        // killed, so its own kill (matched by reference, never a GreenletExit it merely carries from elsewhere)
        // is its outcome.
        if (error is not (null or GreenletExit) && KilledWith is GreenletExit kill && Wraps(error, kill))
            error = kill;
        if (error is GreenletExit exit)
        {
            _value = exit;
            _successful = true;
        }
        else if (error != null)
        {
            _exception = error;
        }
        else
        {
            _value = value;
            _successful = true;
        }
    }

    private static bool Wraps(Exception error, Exception inner)
    {
        for (var (x, depth) = (error.InnerException, 0); x != null && depth < 32; x = x.InnerException, depth++)
        {
            if (ReferenceEquals(x, inner))
                return true;
        }
        return false;
    }

    internal virtual object? InvokeStackful()
    {
        ((Action)_body!)();
        return null;
    }

    internal virtual Task InvokeStackless()
    {
        var task = ((Func<Task>)_body!)() ?? throw new InvalidOperationException($"The async body of {this} returned a null Task.");
        StacklessTask = task;
        return task;
    }

    internal virtual object? ResultOf(Task task) => null;

    internal static Greenlet CreateStackless(Func<Task> body, string? name) => new(body, name, stackless: true);

    /// <summary>Returns an awaiter, so that <c>await greenlet</c> waits for it (and rethrows its exception).</summary>
    public GreenletAwaiter GetAwaiter() => new(this);

    /// <summary>gevent-style description: <c>&lt;Greenlet name#id&gt;</c>.</summary>
    public override string ToString() => $"<Greenlet {Name}#{Id}>";
}

internal enum LinkKind : byte
{
    All,
    Value,
    Exception,
}
