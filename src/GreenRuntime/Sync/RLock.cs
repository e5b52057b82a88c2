using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A re-entrant lock owned by a greenlet (gevent's <c>RLock</c>): the owner may acquire it again, and must release
/// it as many times as it acquired it before another greenlet gets it.
/// </summary>
/// <remarks>Waiters get the lock in FIFO order. Ownership belongs to the greenlet, not to the OS thread: a stackful
/// greenlet resumes on the same carrier, a stackless one on whatever thread runs the hub, and both keep the lock.
/// Greenlets of several hubs may share it (the owner is the greenlet, whatever its hub).</remarks>
[DebuggerDisplay("RLock Owner={_owner} Depth={_depth}")]
public sealed class RLock
{
    private readonly GreenSemaphore _gate = new(1);
    private Greenlet? _owner;
    private int _depth;

    /// <summary>The greenlet holding the lock, or null.</summary>
    public Greenlet? Owner => _owner;

    /// <summary>Whether some greenlet holds the lock.</summary>
    public bool Locked => _owner != null;

    /// <summary>Acquires the lock (again, if the caller already holds it), waiting up to <paramref name="timeout"/>.</summary>
    /// <returns>false if another greenlet still held it after <paramref name="timeout"/>.</returns>
    public bool Acquire(TimeSpan? timeout = null)
    {
        var me = Hub.Current.CurrentGreenlet;
        if (_owner == me)
        {
            _depth++;
            return true;
        }
        if (!_gate.Acquire(timeout)) return false;
        _owner = me;
        _depth = 1;
        return true;
    }

    /// <summary>Acquires the lock without blocking a thread (for stackless greenlets); completes with false on timeout.</summary>
    public async Task<bool> AcquireAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var me = Hub.Current.CurrentGreenlet;
        if (_owner == me)
        {
            _depth++;
            return true;
        }
        if (!await _gate.AcquireAsync(timeout, cancellationToken)) return false;
        _owner = me;
        _depth = 1;
        return true;
    }

    /// <summary>Releases one level of ownership; the last one frees the lock for the next waiter.</summary>
    /// <exception cref="InvalidOperationException">The caller does not hold the lock.</exception>
    public void Release()
    {
        var me = Hub.Current.CurrentGreenlet;
        if (_owner != me)
            throw new InvalidOperationException($"{me} cannot release an RLock it does not hold (owner: {_owner?.ToString() ?? "none"}). Release it from the greenlet that acquired it.");
        if (--_depth > 0) return;
        _owner = null;
        _gate.Release();
    }

    /// <summary>Acquires the lock and returns a scope that releases it: <c>using (rlock.Enter()) { ... }</c>.</summary>
    /// <exception cref="TimeoutException">Not acquired within <paramref name="timeout"/>.</exception>
    public Scope Enter(TimeSpan? timeout = null)
    {
        if (!Acquire(timeout)) throw new TimeoutException($"The RLock was not acquired within {timeout}.");
        return new Scope(this);
    }

    /// <summary>Releases one level of the lock when disposed (once).</summary>
    public struct Scope : IDisposable
    {
        private RLock? _lock;

        internal Scope(RLock rlock) => _lock = rlock;

        /// <summary>Releases the lock.</summary>
        public void Dispose()
        {
            var l = _lock;
            _lock = null;
            l?.Release();
        }
    }
}
