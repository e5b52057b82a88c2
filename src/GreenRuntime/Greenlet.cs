using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

/// <summary>
/// A unit of cooperative work run by a <see cref="Hub"/>, like gevent's <c>Greenlet</c>. Stackful greenlets
/// run synchronous code (and keep a parked OS thread while suspended); stackless ones run async code whose
/// continuations run on the hub. Both have the same API and are awaitable.
/// </summary>
/// <remarks>
/// <para>A greenlet belongs to the hub of the thread that created it (or the hub a <see cref="HubGroup"/> placed it on)
/// and never moves. <see cref="Kill"/>, <see cref="Join"/>, <see cref="Get"/>, the links and <c>await</c> work from any
/// thread, including greenlets of other hubs; the rest is hub-only.</para>
/// <para><see cref="Kill"/> is idempotent and works on unstarted and dead greenlets: killed before it starts,
/// the body never runs and the links still fire exactly once. A kill with the default
/// <see cref="GreenletExit"/> counts as success; any other exception makes the greenlet a failure with it.
/// The exception is raised at the greenlet's current or next blocking point, and again at every later one until the
/// greenlet ends (cancellation is a state: a <c>catch (Exception)</c> cannot make a greenlet unkillable; see
/// <see cref="Green.Shield"/> for cleanup that must block). A greenlet busy in a CPU loop is killed when it next blocks
/// or yields.</para>
/// <para>The body runs under the ExecutionContext captured at creation (AsyncLocal values, Activity, culture); what it
/// changes stays inside it.</para>
/// <para>Link callbacks each run in a greenlet of their own, in the order they were added, after the greenlet
/// finished; <see cref="RawLink"/> callbacks run on the hub and must not block. Links added after it finished still fire.</para>
/// </remarks>
[DebuggerDisplay("{ToString(),nq} {State} {WaitReason}")]
public partial class Greenlet
{
    private static long s_nextId;

    // The body, its closure and its captured state are released when the greenlet finishes (ReleaseForGc), and so are
    // the parent and the captured context: a finished greenlet keeps only its outcome, so a greenlet that respawns
    // itself forever, or a long-lived list of finished greenlets, keeps the heap flat.
    private Delegate? _body;
    private protected Delegate Body => _body ?? throw new InvalidOperationException($"Internal error: the body of {this} was released before it ran.");
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
        public List<(Sync.IAsyncWait Wait, GreenTimeout? Scope)>? AsyncWaits;
        public Dictionary<object, object?>? Locals;
        public CancellationTokenSource? Cancellation;
        public GreenTimeout? InnermostTimeout;
        public Hub.StepWait? StepWait;
        public Exception? SendHeldBack;
        public long SendHeldBackSince;
        public bool InterruptPending;
        public WaitReason HeldWaitReason;
        public bool HasRefusedWake;
        public object? RefusedValue;
        public Exception? RefusedError;
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
    /// <summary>True while its carrier runs a call with the baton released (Hub.Blocking.cs): only that call's return may wake it.</summary>
    internal bool OutsideBaton;

    /// <summary>What woke its park, when it was a kill or timeout (or a thread's interrupt) that the greenlet has not seen
    /// yet: a stackful greenlet inside a native call's callback keeps it pending and parks again (Hub.Parking.cs,
    /// "Cancellation inside a native callback"). Hub-only.</summary>
    internal CancellationWake CancellationWoke;

    /// <summary>Whether its current park is a wait that <see cref="System.Threading.Thread.Interrupt"/> ends on a thread
    /// (Hub.Interrupts.cs). Set by every <see cref="Hub.BeginPark"/>; hub-only.</summary>
    internal bool ParkInterruptible;

    /// <summary>A <see cref="System.Threading.Thread.Interrupt"/> of this greenlet's thread waits for its next interruptible
    /// wait (Hub.Interrupts.cs). Hub-only.</summary>
    internal bool InterruptPending
    {
        get => _rare?.InterruptPending ?? false;
        set
        {
            if (value || _rare != null) Rare.InterruptPending = value;
        }
    }

    /// <summary>The reason of the park a <see cref="CancellationWoke"/> ended, to park again for it. Hub-only.</summary>
    internal WaitReason HeldWaitReason { get => _rare?.HeldWaitReason ?? WaitReason.None; set => Rare.HeldWaitReason = value; }

    /// <summary>A waker refused while <see cref="CancellationWoke"/> waited to be seen, for the same park: the park's own end,
    /// which the greenlet takes if it keeps the cancellation pending (Hub.Parking.cs). Hub-only.</summary>
    internal void RefuseWake(object? value, Exception? error)
    {
        var rare = Rare;
        if (rare.HasRefusedWake) return; // the first one ended the park
        rare.HasRefusedWake = true;
        rare.RefusedValue = value;
        rare.RefusedError = error;
    }

    /// <summary>Takes (and forgets) the wake <see cref="RefuseWake"/> kept. Hub-only.</summary>
    internal bool TakeRefusedWake(out object? value, out Exception? error)
    {
        var rare = _rare;
        value = rare?.RefusedValue;
        error = rare?.RefusedError;
        if (rare is not { HasRefusedWake: true }) return false;
        rare.HasRefusedWake = false;
        rare.RefusedValue = null;
        rare.RefusedError = null;
        return true;
    }

    /// <summary>For a blocking step of a stackless greenlet (Hub.Steps.cs): the step as one of that greenlet's waits.</summary>
    internal Hub.StepWait? StepWait { get => _rare?.StepWait; set => Rare.StepWait = value; }

    /// <summary>Since when (a <see cref="System.Diagnostics.Stopwatch"/> timestamp) sends have held back <paramref name="pending"/>,
    /// the kill or timeout pending now: from this call on for one they had not seen (Io/SocketIo.cs). Hub-only.</summary>
    internal long SendsHeldBackSince(Exception pending)
    {
        var rare = Rare;
        if (!ReferenceEquals(rare.SendHeldBack, pending))
        {
            rare.SendHeldBack = pending;
            rare.SendHeldBackSince = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        return rare.SendHeldBackSince;
    }

    /// <summary>
    /// Set by the first kill and never cleared: the level-triggered half of cancellation. While it is set, every
    /// blocking point of this greenlet raises it again (BeginPark, the Task-form waits), so a <c>catch (Exception)</c>
    /// around a blocking call cannot make the greenlet unkillable. <see cref="PendingException"/> is the edge half:
    /// the one delivery to a greenlet that is running or ready when the kill or timeout lands.
    /// </summary>
    internal Exception? KillException;

    /// <summary>Whether <see cref="KillException"/> has been thrown in the greenlet at least once (see <see cref="Raising"/>).</summary>
    internal bool KillRaised;

    /// <summary>The kill or timeout exception thrown last in this greenlet, and the stack pointer of its throw: its finally
    /// handlers do not raise it again (Scheduling/UnwindingCleanup.cs).</summary>
    internal Exception? LastRaised;

    /// <summary>See <see cref="LastRaised"/>.</summary>
    internal long LastRaisedAt;

    /// <summary>How many <see cref="GreenTimeout"/> scopes of this greenlet have expired and are not disposed yet.</summary>
    internal int ExpiredTimeouts;

    /// <summary>Open <see cref="CancellationShield"/>s: while above zero, kills and timeouts are recorded but not raised.</summary>
    /// <summary>A kill or timeout came while a socket send of this greenlet waited, shielded, for the rest of its message:
    /// raised at the start of its next send (Io/SocketIo.cs). Hub-only.</summary>
    /// <summary>The tokens handed to operations of this greenlet that its kill and timeouts cancel (LowLevel/KillLinkedSource.cs),
    /// while the operations last. Created on the hub; locked for every use, since a source may be disposed anywhere.</summary>
    internal List<LowLevel.KillLinkedSource>? LiveCancellations;

    internal int ShieldDepth;

    /// <summary>A kill woke this greenlet's park and left the cancel of <see cref="CancellationToken"/> to the greenlet
    /// itself, made as it resumes with the kill (<see cref="CancelOwnTokenBeforeUnwinding"/>). Hub-only.</summary>
    internal bool OwnTokenCancelDeferred;

    /// <summary><see cref="CancellationToken"/> was given to code outside the runtime, so an operation may observe it
    /// (LowLevel/KillLinkedSource.cs, Settle). Set by whoever asks for the token; read on the hub.</summary>
    internal bool OwnTokenHandedOut;

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

    /// <summary>The ExecutionContext captured at creation, which the body runs under (null: flow was suppressed; the default).</summary>
    internal ExecutionContext? Context;

    /// <summary>Creates a stackful greenlet that will run <paramref name="body"/>; it does not start until <see cref="Start"/> (or <see cref="Switch"/>).</summary>
    public Greenlet(Action body, string? name = null) : this((Delegate)body, name, stackless: false) { }

    /// <summary>A stackful greenlet of <paramref name="hub"/>, created from any thread (HubGroup).</summary>
    internal Greenlet(Action body, string? name, Hub hub) : this((Delegate)body, name, stackless: false, hub) { }

    /// <param name="body">The body.</param>
    /// <param name="name">The name, or null.</param>
    /// <param name="stackless">Whether the body is async.</param>
    /// <param name="hub">The hub that runs it: the calling thread's hub when null; another hub only from HubGroup, which
    /// then starts it through that hub's inbox.</param>
    private protected Greenlet(Delegate body, string? name, bool stackless, Hub? hub = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        Hub = hub ?? Hub.Current;
        _body = body;
        Id = Interlocked.Increment(ref s_nextId);
        if (name != null) Rare.Name = name;
        IsStackless = stackless;
        // The spawner is the parent when it runs on the same hub; a greenlet placed on another hub belongs to that hub.
        _parent = Hub.IsOnHubThread ? Hub.CurrentGreenlet : Hub.HubGreenlet;
        Context = ExecutionContext.Capture(); // runs its body under its creator's context (Scheduling/AmbientContext.cs)
        if (stackless) SyncContext = new HubSynchronizationContext(this);
        if (Hub.Options.TrackSpawnStacks) Rare.SpawnStack = SpawnSite();
    }

    /// <summary>The caller's stack from the first frame outside this library: counting frames to skip would depend on
    /// what the JIT inlined (Green.Spawn into its caller, this constructor into Green.Spawn).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string SpawnSite()
    {
        var here = new StackTrace(0, false);
        int ours = 0;
        while (ours < here.FrameCount && here.GetFrame(ours)?.GetMethod()?.Module.Assembly == typeof(Greenlet).Assembly) ours++;
        return new StackTrace(ours, false).ToString();
    }

    private Greenlet(Hub hub, string name, GreenletState state)
    {
        Hub = hub;
        Id = Interlocked.Increment(ref s_nextId);
        Rare.Name = name;
        State_ = state;
    }

    /// <summary>A greenlet of the hub's own (the hub, the main greenlet, a blocking step): no body, never scheduled as a start.</summary>
    internal static Greenlet CreateSpecial(Hub hub, string name, GreenletState state = GreenletState.Created) => new(hub, name, state);

    /// <summary>The hub that runs this greenlet.</summary>
    public Hub Hub { get; }

    /// <summary>A process-unique number.</summary>
    public long Id { get; }

    /// <summary>The name given at creation, or <c>Greenlet-{Id}</c>.</summary>
    public string Name => _rare?.Name ?? (Rare.Name = $"Greenlet-{Id}");

    /// <summary>The greenlet that created this one, while this one has not finished. When it finishes after being entered
    /// with <see cref="Switch"/>, control returns to its parent.</summary>
    /// <remarks>A finished greenlet forgets its parent (null), as gevent's weak reference to the parent does once the
    /// parent is gone: a chain of greenlets that spawn each other does not keep every ancestor alive.</remarks>
    public Greenlet? Parent => _parent;
    private Greenlet? _parent;

    /// <summary>Drops what a finished greenlet no longer needs (body, closure, parent, context). Called once by the hub's Finish.</summary>
    internal void ReleaseForGc()
    {
        _body = null;
        _parent = null;
        Context = null;
        StacklessTask = null;
    }

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
            if (g.State_ == GreenletState.Created && !g.Hub.IsDisposed) g.Hub.StartGreenlet(g); // a disposed hub starts nothing new
        }, this);
    }

    internal void MarkStarted() => _startedFlag = true;

    /// <summary>Waits until the greenlet has finished, or the timeout elapsed. Safe from any thread.</summary>
    /// <remarks>From a greenlet of another hub only that greenlet waits (its hub runs others meanwhile; the end is
    /// posted to its inbox); from a thread with no hub, or a hub callback's thread of another hub, the thread blocks.</remarks>
    /// <returns>true if it has finished.</returns>
    public bool Join(TimeSpan? timeout = null)
    {
        if (Dead) return true;
        if (!Hub.IsOnHubThread) return JoinFromElsewhere(timeout);
        if (this == Hub.CurrentGreenlet) throw new InvalidOperationException($"{this} cannot join itself.");
        Green.JoinAll([this], timeout);
        return Dead;
    }

    /// <summary><see cref="Join"/> from a thread that is not this greenlet's hub's.</summary>
    private bool JoinFromElsewhere(TimeSpan? timeout)
    {
        Sync.Blocking.ValidateTimeout(timeout);
        var here = Hub.CurrentOrNull;
        if (here != null && here.CanBlockHere)
        {
            // A greenlet of another hub: park it; the raw link posts the wake to its hub's inbox.
            var token = here.BeginPark(WaitReason.Join);
            here.BeginExternalWait();
            HubTimer? timer = null;
            try
            {
                try
                {
                    AddLink(_ => here.PostWake(token), LinkKind.All);
                }
                catch
                {
                    here.CancelPark(token);
                    throw;
                }
                if (Sync.Blocking.IsFinite(timeout)) timer = here.AddWakeTimer(timeout!.Value, token, Hub.TimedOut);
                here.EndPark(token);
            }
            finally
            {
                timer?.Cancel();
                here.EndExternalWait();
            }
            return Dead;
        }
        here?.AssertMayBlock(); // inside a callback of another hub: refused, as any blocking call there
        // A thread: not disposed, the link may still fire after a timed-out wait gave up on it.
        var done = new ManualResetEventSlim();
        AddLink(_ => done.Set(), LinkKind.All);
        // A link posted just as a disposed hub closed after its last greenlet is never run: look at Dead now and then.
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var limit = timeout ?? Timeout.InfiniteTimeSpan;
        var look = TimeSpan.FromMilliseconds(100);
        while (!Dead)
        {
            var left = limit == Timeout.InfiniteTimeSpan ? look : limit - watch.Elapsed;
            if (left <= TimeSpan.Zero || done.Wait(left < look ? left : look)) break;
        }
        return Dead;
    }

    /// <summary>Waits for the greenlet and returns its value, or rethrows its exception with its original stack. Safe from any thread (see <see cref="Join"/>).</summary>
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
    /// greenlet on itself, it throws the exception at once. From a raw link or timer callback it never blocks.
    /// After the first delivery every blocking point of the greenlet raises the (first) kill exception again until it
    /// ends, and <see cref="CancellationToken"/> is cancelled. A stackless greenlet killed while awaiting stays alive
    /// until its body's task completes, so a blocking kill returns after its <c>finally</c> blocks ran: an await of
    /// this library's Task-form waits faults at once; an await of a foreign task ends when that task does (pass the
    /// greenlet's <see cref="CancellationToken"/> to it).</remarks>
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
        // The kill goes through the greenlet's hub's inbox; a caller that is a greenlet of another hub then waits for
        // the end cooperatively (Join), a thread blocks.
        if (block && Hub.CurrentOrNull is { CanBlockHere: true })
        {
            Hub.PostAction(() => Hub.KillGreenlet(this, exception));
            Join(timeout);
            return;
        }
        // Not disposed: the link may still fire after a timed-out wait gave up on it.
        var done = block ? new ManualResetEventSlim() : null;
        Hub.PostAction(() =>
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

    /// <summary>
    /// Once the greenlet has finished, however it finished, runs <paramref name="callback"/> in a new greenlet of its
    /// own (gevent's <c>link</c>), so the callback may block and patched calls in it are cooperative. Hub-only.
    /// </summary>
    /// <remarks>Each link gets its own greenlet, started in the order the links were added, under the ambient context
    /// of the code that called <c>Link</c>. A link that throws fails its own greenlet (logged like any failed greenlet).
    /// For a cheap notification that must not block, use <see cref="RawLink"/>.</remarks>
    public void Link(Action<Greenlet> callback) => AddLink(SpawnedLink.Wrap(callback), LinkKind.All);

    /// <summary>Like <see cref="Link"/>, once the greenlet has finished successfully.</summary>
    public void LinkValue(Action<Greenlet> callback) => AddLink(SpawnedLink.Wrap(callback), LinkKind.Value);

    /// <summary>Like <see cref="Link"/>, once the greenlet has failed.</summary>
    public void LinkException(Action<Greenlet> callback) => AddLink(SpawnedLink.Wrap(callback), LinkKind.Exception);

    /// <summary>
    /// Calls <paramref name="callback"/> on the hub itself once the greenlet has finished, however it finished
    /// (gevent's <c>rawlink</c>): no greenlet is spawned, so it is cheap, but it runs as a hub callback and must not
    /// block (a blocking call there throws, and a patched call runs the blocking original, logged once per call site).
    /// </summary>
    public void RawLink(Action<Greenlet> callback) => AddLink(callback, LinkKind.All);

    /// <summary>Removes every registration of <paramref name="callback"/> (by <see cref="Link"/>, <see cref="RawLink"/>, ...) that has not fired yet.</summary>
    /// <remarks>From another thread than the greenlet's hub's the removal is posted to that hub: a link that fires
    /// meanwhile still runs.</remarks>
    public void Unlink(Action<Greenlet> callback)
    {
        if (!Hub.IsOnHubThread)
        {
            Hub.PostAction(() => Unlink(callback));
            return;
        }
        if (SpawnedLink.Is(_firstLink.Callback, callback)) _firstLink = default;
        if (_moreLinks != null) RemoveMoreLinks(callback); // the lambda's closure is allocated only when needed
    }

    private void RemoveMoreLinks(Action<Greenlet> callback)
    {
        _moreLinks?.RemoveAll(l => SpawnedLink.Is(l.Callback, callback));
    }

    /// <summary>A user's link: runs the callback in a greenlet of its own, under the context captured at <c>Link</c>.</summary>
    private sealed class SpawnedLink
    {
        private readonly Action<Greenlet> _user;
        private readonly ExecutionContext? _context = ExecutionContext.Capture();

        private SpawnedLink(Action<Greenlet> user) => _user = user;

        public static Action<Greenlet> Wrap(Action<Greenlet> user)
        {
            ArgumentNullException.ThrowIfNull(user);
            return new SpawnedLink(user).Run;
        }

        /// <summary>Whether the registered <paramref name="registered"/> is <paramref name="user"/> itself or its wrapper.</summary>
        public static bool Is(Action<Greenlet>? registered, Action<Greenlet> user) =>
            registered != null && (registered == user || (registered.Target is SpawnedLink s && s._user == user));

        // Runs as a hub callback (NotifyLinks): spawning never blocks.
        private void Run(Greenlet finished)
        {
            if (finished.Hub.IsDisposed) return; // it finished after Dispose: the hub starts nothing new, not even a link's greenlet
            var g = new Greenlet(() => _user(finished));
            g.Context = _context;
            g.Start();
        }
    }

    /// <remarks>From another thread than the greenlet's hub's, the registration is posted to that hub (links run there).</remarks>
    internal void AddLink(Action<Greenlet> callback, LinkKind kind)
    {
        ArgumentNullException.ThrowIfNull(callback);
        if (!Hub.IsOnHubThread)
        {
            try
            {
                Hub.PostAction(() => AddLink(callback, kind));
            }
            catch (ObjectDisposedException) when (Dead)
            {
                // The hub closed once its last greenlet had ended: no loop runs links any more, so this one runs here.
                if (Matches(kind)) callback(this);
            }
            return;
        }
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
        var savedSite = Hub.CallbackSite;
        Hub.CallbackSite = callback.Method; // a raw link that makes a patched call is named in event 6
        try
        {
            callback(this);
        }
        catch (Exception e)
        {
            Log.CallbackFailed(Hub.Logger, e, callback.Method.Name);
        }
        finally
        {
            Hub.CallbackSite = savedSite;
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
        // Likewise when unwinding from the raised kill ended in an exception that does not even wrap it (see Raising), and
        // when the greenlet ended with a cancellation before the kill was raised at all (CarriesCancellation).
        if (error is not (null or GreenletExit) && KillException is GreenletExit kill && (KillRaised || Wraps(error, kill) || CarriesCancellation(error)))
            error = kill;
        // Only its own exit: another greenlet's kill that ends this one (a single-flight factory that greenlet ran, whose
        // outcome every waiter rethrows) is a failure here, not a quiet, successful end.
        if (error is GreenletExit exit && (ReferenceEquals(exit, KillException) || exit.Killed is null || exit.Killed == this))
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

    /// <summary>
    /// Notes that <paramref name="e"/> is about to be thrown in this greenlet at a blocking point, and returns it. A kill or
    /// a timeout, once raised, is raised again at every later blocking point but those of the finally handlers it runs
    /// as it unwinds (<see cref="LastRaised"/>); library code that cleans up in a <c>catch</c> (a database reader reading
    /// the rest of its results) then meets it there, may swallow it and throw an exception of its own that does not wrap
    /// it (MySqlConnector: "Connection must be Open"). Whatever ends the greenlet (or leaves the timeout's scope) after
    /// the raise is the kill's (the timeout's) doing, so the raise is remembered: <see cref="SetResult"/> and
    /// <see cref="GreenTimeoutException.RaisedBy"/> look at it.
    /// </summary>
    internal Exception Raising(Exception e)
    {
        if (ReferenceEquals(e, KillException)) KillRaised = true;
        else if (e is GreenTimeoutException { Scope: { } scope }) scope.Raises++;
        else return e;
        LastRaised = e;
        LastRaisedAt = Scheduling.UnwindingCleanup.StackPointer();
        return e;
    }

    /// <summary>
    /// Whether <paramref name="error"/> is or wraps an <see cref="OperationCanceledException"/>. A kill or timeout that
    /// comes while its greenlet is in a released call that is not a cancellation point (a contended lock's wait) stays
    /// pending, but the tokens of the greenlet's operations are cancelled there and then (LowLevel/KillLinkedSource.cs).
    /// The code after the call may find its operation cancelled and throw the cancellation, wrapped or not, without
    /// reaching a blocking point that would raise the kill or timeout first (WCF's and gRPC's first calls on a channel,
    /// made while their locks are contended). Such a cancellation, met while the kill or timeout is pending, is its doing.
    /// </summary>
    internal static bool CarriesCancellation(Exception error) =>
        InChain(error, 0, static (x, _) => x is OperationCanceledException);

    private static bool Wraps(Exception error, Exception inner) =>
        InChain(error.InnerException, inner, static (x, wrapped) => ReferenceEquals(x, wrapped));

    /// <summary>Whether an exception of the <see cref="Exception.InnerException"/> chain from <paramref name="first"/>
    /// matches. Bounded: a chain is finite, but a pathological wrapper could nest very deeply.</summary>
    private static bool InChain<TState>(Exception? first, TState state, Func<Exception, TState, bool> match)
    {
        for (var (x, depth) = (first, 0); x != null && depth < 32; x = x.InnerException, depth++)
        {
            if (match(x, state))
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

    internal static Greenlet CreateStackless(Func<Task> body, string? name, Hub? hub = null) => new(body, name, stackless: true, hub);

    /// <summary>
    /// Creates a stackless greenlet that will run <paramref name="body"/> on the hub when started (<see cref="Start"/>):
    /// the unstarted counterpart of <see cref="Green.SpawnAsync(Func{Task}, string?)"/>, for code that links or pools it
    /// first.
    /// </summary>
    /// <remarks>A named factory rather than a constructor overload, for the reason given at <see cref="Green.SpawnAsync(Func{Task}, string?)"/>:
    /// C# would bind a blocking lambda whose end is unreachable to a Task-returning delegate.</remarks>
    public static Greenlet ForAsync(Func<Task> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return CreateStackless(body, name);
    }

    /// <summary>
    /// A token that is cancelled when this greenlet is killed (by <see cref="Kill"/>, <see cref="Green.KillAll"/>, a
    /// pool or a server stopping), so async code and foreign Tasks it starts can observe the kill:
    /// <c>await Task.Delay(1000, Green.Current.CancellationToken)</c>. Hub-only.
    /// </summary>
    /// <remarks>Already cancelled if the greenlet was killed before the token was asked for. A greenlet that finished
    /// without being killed never cancels it. A stackful greenlet that the kill wakes from a park cancels it itself,
    /// shielded, as it resumes with the kill and before the kill unwinds its stack, so the callbacks run on its own
    /// stack, where they may block cooperatively (a database driver's cancel sends a cancel request to its server).
    /// Otherwise (a stackless greenlet, a shielded one, one that has not started or waits in a call that released the
    /// baton) they run on the hub, inside the call that killed the greenlet: like link callbacks they must not block
    /// there. A task wait that the kill ended, in a greenlet that gave its token out, waits for the task to end (at
    /// most 5 seconds) before the kill unwinds (see docs/lowlevel.md, <c>Parking.SettleCancellation</c>).</remarks>
    public CancellationToken CancellationToken
    {
        get
        {
            var token = OwnToken;
            if (token.CanBeCanceled) OwnTokenHandedOut = true;
            return token;
        }
    }

    /// <summary><see cref="CancellationToken"/> for the runtime's own registrations, which do not make it handed out.</summary>
    internal CancellationToken OwnToken
    {
        get
        {
            if (KillException != null && _rare?.Cancellation == null) return new CancellationToken(true);
            if (Dead && _rare?.Cancellation == null) return CancellationToken.None;
            return (Rare.Cancellation ??= new CancellationTokenSource()).Token;
        }
    }

    /// <summary>Whether the kill has cancelled <see cref="CancellationToken"/> and code outside the runtime holds it.</summary>
    internal bool OwnTokenCancelledByKill =>
        OwnTokenHandedOut && KillException != null && _rare?.Cancellation is { IsCancellationRequested: true };

    /// <summary>On this greenlet, as it resumes with the kill and before unwinding: the cancel of
    /// <see cref="CancellationToken"/> that the kill left to it. Shielded, so that a callback that parks (its own
    /// request to cancel, sent over a socket) is not interrupted by the very kill it serves.</summary>
    internal void CancelOwnTokenBeforeUnwinding()
    {
        if (!OwnTokenCancelDeferred) return;
        System.Diagnostics.Debug.Assert(Hub.CurrentOrNull is { } hub && hub.CurrentGreenlet == this,
            $"Invariant broken: the cancel of {this}'s token that its kill left to it ran off that greenlet.");
        OwnTokenCancelDeferred = false;
        using (new CancellationShield(this))
            CancelToken();
    }

    /// <summary>Cancels <see cref="CancellationToken"/> if anyone asked for it. Called once for the first kill: by the hub,
    /// or by the greenlet itself (<see cref="CancelOwnTokenBeforeUnwinding"/>).</summary>
    internal void CancelToken()
    {
        OwnTokenCancelDeferred = false;
        if (_rare?.Cancellation is not { } cts) return;
        try
        {
            cts.Cancel();
        }
        catch (AggregateException e)
        {
            Log.CallbackFailed(Hub.Logger, e, "CancellationToken callback");
        }
    }

    /// <summary>
    /// The exception every blocking point of this greenlet raises now: the kill, else the outermost expired
    /// <see cref="GreenTimeout"/> scope still open (an outer scope wins over an inner one), else null.
    /// </summary>
    /// <remarks>A stackless greenlet's scopes belong to the flows of its code (<see cref="GreenTimeout.FlowScope"/>): only
    /// the scopes of the flow that blocks count, so a loop the greenlet started outside an expired scope goes on.</remarks>
    internal Exception? StickyException() => StickyException(IsStackless ? GreenTimeout.FlowScope : null);

    /// <summary>Whether a kill or timeout is pending that has not been raised in this greenlet yet (see <see cref="Raising"/>).
    /// Hub-only.</summary>
    internal bool UnraisedCancellation =>
        PendingException != null
        || StickyException() switch
        {
            null => false,
            GreenTimeoutException { Scope: { } scope } => !scope.Raised,
            var sticky => !(ReferenceEquals(sticky, KillException) && KillRaised),
        };

    /// <summary>Whether a kill or timeout waits to be raised at this greenlet's next blocking point. Hub-only.</summary>
    internal bool CancellationPending => PendingException != null || StickyException() != null;

    /// <summary><see cref="StickyException()"/> for a blocking point of the flow whose innermost scope is
    /// <paramref name="flowScope"/> (stackless greenlets; ignored for a stackful one, whose scopes are its stack's).</summary>
    internal Exception? StickyException(GreenTimeout? flowScope)
    {
        if (KillException != null) return KillException;
        if (ExpiredTimeouts == 0) return null;
        GreenTimeout? outermost = null;
        if (IsStackless)
        {
            for (var t = flowScope; t != null; t = t.FlowOuter)
                if (t.Expired && t.IsOpen) outermost = t;
        }
        else
        {
            for (var t = _rare?.InnermostTimeout; t != null; t = t.Outer)
                if (t.Expired) outermost = t;
        }
        return outermost?.Exception;
    }

    /// <summary>The newest open <see cref="GreenTimeout"/> scope of this greenlet (a linked stack through <see cref="GreenTimeout.Outer"/>).</summary>
    internal GreenTimeout? InnermostTimeout
    {
        get => _rare?.InnermostTimeout;
        set { if (value != null || _rare != null) Rare.InnermostTimeout = value; }
    }

    /// <summary>Returns an awaiter, so that <c>await greenlet</c> waits for it (and rethrows its exception).</summary>
    public GreenletAwaiter GetAwaiter() => new(this);

    /// <summary>gevent-style description: <c>&lt;Greenlet name#id&gt;</c>.</summary>
    public override string ToString() => $"<Greenlet {Name}#{Id}>";
}

/// <summary>See <see cref="Greenlet.CancellationWoke"/>.</summary>
internal enum CancellationWake : byte
{
    None,
    KillOrTimeout,
    Interrupt,
}

internal enum LinkKind : byte
{
    All,
    Value,
    Exception,
}
