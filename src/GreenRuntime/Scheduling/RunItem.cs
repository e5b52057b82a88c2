namespace GreenRuntime.Scheduling;

internal enum RunKind : byte
{
    /// <summary>Run a started greenlet's body for the first time.</summary>
    Start,
    /// <summary>Resume a parked greenlet on the carrier that keeps its stack.</summary>
    Resume,
    /// <summary>Run one continuation of a stackless greenlet under its synchronization context.</summary>
    Continuation,
    /// <summary>Run a hub callback (links, posts): may not block.</summary>
    Callback,
    /// <summary>Inbox only: call TryWake with the token, from another thread.</summary>
    Wake,
}

/// <summary>One entry of the ready queue or the inbox. A struct so queueing does not allocate.</summary>
/// <remarks>32 bytes: the ready queue of a burst (100k spawns) holds one per greenlet. A cross-thread wake that
/// throws keeps its value and exception together in the state slot (a <see cref="WakeFailure"/>, allocated only
/// then), so the common items do not pay for an exception field.</remarks>
internal readonly struct RunItem
{
    public readonly RunKind Kind;

    public readonly int Sequence;
    public readonly Greenlet? Greenlet;
    public readonly Delegate? Callback;
    private readonly object? _state;

    private RunItem(RunKind kind, Greenlet? greenlet, Delegate? callback, object? state, int sequence = 0)
    {
        Kind = kind;
        Greenlet = greenlet;
        Callback = callback;
        _state = state;
        Sequence = sequence;
    }

    /// <summary>The callback's state, or the value a wake passes.</summary>
    public object? State => Kind == RunKind.Wake && _state is WakeFailure f ? f.Value : _state;

    /// <summary>The exception a wake throws into the park, or null.</summary>
    public Exception? Error => Kind == RunKind.Wake && _state is WakeFailure f ? f.Error : null;

    public static RunItem ForStart(Greenlet g) => new(RunKind.Start, g, null, null);
    public static RunItem ForResume(Greenlet g) => new(RunKind.Resume, g, null, null);
    public static RunItem ForContinuation(Greenlet g, SendOrPostCallback d, object? state) => new(RunKind.Continuation, g, d, state);
    public static RunItem ForCallback(Action<object?> callback, object? state) => new(RunKind.Callback, null, callback, state);

    /// <summary>A cross-thread wake that resumes the park with a value or throws <paramref name="error"/> into it.</summary>
    public static RunItem ForWake(WakeToken token, object? value, Exception? error) =>
        new(RunKind.Wake, token.Greenlet, null, error == null ? value : new WakeFailure(value, error), token.Sequence);

    public WakeToken Token => new(Greenlet!, Sequence);

    /// <summary>This item with <paramref name="stamp"/> in <see cref="Sequence"/>, which only a <see cref="RunKind.Wake"/>
    /// reads otherwise: a wake queued by the loop records there its arrival among the ready items (Hub.Order.cs).</summary>
    public RunItem WithStamp(int stamp) => new(Kind, Greenlet, Callback, _state, stamp);

    private sealed record WakeFailure(object? Value, Exception Error);
}
