using System.Collections.Concurrent;

namespace GreenRuntime.Soak;

/// <summary>How a workload greenlet ended.</summary>
internal enum Outcome { Success, Failure, Killed }

/// <summary>
/// Counts every greenlet a workload spawns against the way it ended, and collects invariant violations.
/// </summary>
/// <remarks>
/// Invariant "no greenlet is lost": every greenlet spawned through <see cref="Spawn"/> ends exactly once, as a
/// success, a failure or killed; its link (which the runtime promises to fire exactly once) moves it from
/// alive to one of the three. When the load is paused, <see cref="Alive"/> must come back to zero; a greenlet that
/// never ends is a lost wake or a leaked park. A failure with an exception the workload did not declare acceptable
/// is a violation too (a workload declares, per greenlet, which exceptions its faults may legitimately cause).
/// Everything here runs on the hub (spawns and links), except <see cref="Violate"/>, which is thread-safe.
/// </remarks>
internal sealed class Ledger
{
    private readonly Dictionary<string, long[]> _byKind = new();
    private readonly HashSet<Greenlet> _alive = new();
    private readonly ConcurrentQueue<string> _violations = new();
    private long _spawned, _success, _failure, _killed, _linkedTwice;

    public long Spawned => _spawned;
    public long Succeeded => _success;
    public long Failed => _failure;
    public long Killed => _killed;
    public int Alive => _alive.Count;
    public IReadOnlyCollection<Greenlet> AliveGreenlets => _alive;
    public IEnumerable<string> Violations => _violations;
    public int ViolationCount => _violations.Count;

    /// <summary>Records a broken invariant (thread-safe). The first few are printed at once.</summary>
    public void Violate(string message)
    {
        _violations.Enqueue(message);
        if (_violations.Count <= 20) Console.WriteLine($"VIOLATION: {message}");
    }

    /// <summary>Spawns a stackful greenlet and accounts for it.</summary>
    public Greenlet Spawn(string kind, Action body, Func<Exception, bool>? acceptable = null) =>
        Track(kind, Green.Spawn(body, kind), acceptable);

    /// <summary>Spawns a stackless greenlet and accounts for it.</summary>
    public Greenlet SpawnAsync(string kind, Func<Task> body, Func<Exception, bool>? acceptable = null) =>
        Track(kind, Green.SpawnAsync(body, kind), acceptable);

    private Greenlet Track(string kind, Greenlet greenlet, Func<Exception, bool>? acceptable)
    {
        _spawned++;
        _alive.Add(greenlet);
        if (!_byKind.TryGetValue(kind, out var counts)) _byKind[kind] = counts = new long[4];
        counts[0]++;
        greenlet.Link(g => Ended(kind, g, counts, acceptable));
        return greenlet;
    }

    private void Ended(string kind, Greenlet g, long[] counts, Func<Exception, bool>? acceptable)
    {
        if (!_alive.Remove(g))
        {
            _linkedTwice++;
            Violate($"{g} ({kind}) ended twice: its link fired more than once.");
            return;
        }
        if (!g.Dead) Violate($"{g} ({kind}): its link fired while it was not dead.");
        var outcome = g.Exception != null ? Outcome.Failure : g.Value is GreenletExit ? Outcome.Killed : Outcome.Success;
        switch (outcome)
        {
            case Outcome.Success: _success++; counts[1]++; break;
            case Outcome.Failure: _failure++; counts[2]++; break;
            default: _killed++; counts[3]++; break;
        }
        if (g.Exception is { } e && !(e is DeliberateException || (acceptable?.Invoke(e) ?? false)))
            Violate($"{g} ({kind}) failed with an exception its faults cannot explain: {e}");
    }

    /// <summary>One line per greenlet kind: spawned = success + failure + killed (+ alive).</summary>
    public IEnumerable<string> Summary() =>
        _byKind.OrderBy(k => k.Key).Select(k =>
            $"{k.Key,-22} spawned {k.Value[0],7}  success {k.Value[1],7}  failure {k.Value[2],6}  killed {k.Value[3],6}");

    /// <summary>Whether the books balance: every spawned greenlet alive or ended exactly once.</summary>
    public bool Balanced => _spawned == _success + _failure + _killed + _alive.Count && _linkedTwice == 0;
}

/// <summary>The exception workloads raise on purpose ("greenlets that raise"); always an acceptable failure.</summary>
internal sealed class DeliberateException(string message) : Exception(message);
