using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A counting semaphore for greenlets, like gevent's <c>Semaphore</c>: <see cref="Acquire"/> takes a permit, waiting
/// while there is none; <see cref="Release"/> returns one.
/// </summary>
/// <remarks>
/// <para>Invariant S: a positive <see cref="Count"/> implies no live waiter (a release goes to the first live waiter
/// before it is counted). Checked in DEBUG after every change.</para>
/// <para>FIFO-fair: <see cref="Release"/> hands its permit straight to the longest-waiting greenlet, so a greenlet
/// that arrives later (even one calling <see cref="TryAcquire"/>) cannot barge ahead, and no waiter is starved. A
/// waiter whose timeout expired is skipped and never consumes a permit.</para>
/// <para>Every method is safe from any thread; greenlets of several hubs and plain threads may acquire and release
/// one semaphore (each waiter is woken through its own hub).</para>
/// </remarks>
/// <example>
/// <code>
/// var sem = new GreenSemaphore(2);
/// using (sem.Enter())
/// {
///     // at most two greenlets here at a time
/// }
/// </code>
/// </example>
[DebuggerDisplay("{GetType().Name,nq} Count={Count} Waiters={_waiters.Count}")]
public class GreenSemaphore
{
    private readonly SyncLock _lock = new();
    private readonly WaiterList<bool> _waiters = new();
    private volatile int _count;

    /// <summary>Creates a semaphore with <paramref name="initialCount"/> permits.</summary>
    public GreenSemaphore(int initialCount = 1)
    {
        if (initialCount < 0) throw new ArgumentOutOfRangeException(nameof(initialCount), initialCount, "The initial count must not be negative.");
        _count = initialCount;
    }

    /// <summary>Permits available now.</summary>
    public int Count => _count;

    /// <summary>Whether no permit is available (an <see cref="Acquire"/> would wait).</summary>
    public bool Locked => _count <= 0;

    /// <summary>Takes a permit if one is available, without blocking.</summary>
    public bool TryAcquire()
    {
        _lock.Enter();
        bool ok = TryAcquireLocked();
        _lock.Exit();
        return ok;
    }

    // Count > 0 implies no live waiter (Release hands permits to waiters before counting them), so this is fair.
    private bool TryAcquireLocked()
    {
        if (_count <= 0) return false;
        _count--;
        return true;
    }

    /// <summary>Takes a permit, waiting up to <paramref name="timeout"/> for one.</summary>
    /// <param name="timeout">null waits as long as it takes; zero does not wait.</param>
    /// <returns>false if no permit came in time.</returns>
    /// <exception cref="LoopExitException">Called from the main greenlet when nothing can ever release a permit.</exception>
    public bool Acquire(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryAcquire()) return true;
        if (timeout == TimeSpan.Zero) return false;
        var hub = Blocking.WaitingHub();
        _lock.Enter();
        if (TryAcquireLocked())
        {
            _lock.Exit();
            return true;
        }
        return Blocking.Park(hub, _lock, _waiters, WaitReason.Lock, timeout, false, GiveBack) != null;
    }

    /// <summary>Takes a permit without blocking a thread; completes with false if none came within <paramref name="timeout"/>.</summary>
    public Task<bool> AcquireAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Blocking.WaitFlagAsync(this, _lock, _waiters, static s => s.TryAcquireLocked(), timeout, cancellationToken);

    /// <summary>Returns a permit: it goes to the longest-waiting greenlet, or back to the count. Safe from any thread.</summary>
    /// <exception cref="InvalidOperationException">A <see cref="BoundedSemaphore"/> released more often than acquired.</exception>
    public void Release()
    {
        _lock.Enter();
        try
        {
            ReleaseLocked();
        }
        finally
        {
            _lock.Exit();
        }
    }

    private void ReleaseLocked()
    {
        if (_waiters.ServeFirst(true) != null) return;
        CheckRelease(_count);
        _count++;
        AssertInvariant();
    }

    [Conditional("DEBUG")]
    private void AssertInvariant()
    {
        // Through SyncLock: a check that fails frees the semaphore's lock before its exception leaves.
        if (SyncLock.Violated(_count > 0 && _waiters.HasCertainlyLive))
            throw SyncLock.InvariantBroken($"Invariant S broken: {this} counts {_count} permit(s) while a greenlet waits for one.");
    }

    /// <summary>Lets a subclass refuse a release that would take the count past its bound.</summary>
    private protected virtual void CheckRelease(int countBefore) { }

    /// <summary>A waiter was handed a permit but was killed before it resumed: pass the permit on. Under the lock.</summary>
    private void GiveBack(Waiter<bool> w) => ReleaseLocked();

    /// <summary>Acquires a permit and returns a scope that releases it when disposed: <c>using (sem.Enter()) { ... }</c>.</summary>
    /// <exception cref="TimeoutException">No permit came within <paramref name="timeout"/>.</exception>
    public Scope Enter(TimeSpan? timeout = null)
    {
        if (!Acquire(timeout)) throw new TimeoutException($"{this} gave no permit within {timeout}.");
        return new Scope(this);
    }

    /// <summary>Acquires a permit without blocking a thread and returns a scope that releases it: <c>using (await sem.EnterAsync()) { ... }</c>.</summary>
    /// <exception cref="TimeoutException">No permit came within <paramref name="timeout"/>.</exception>
    public async Task<Scope> EnterAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        if (!await AcquireAsync(timeout, cancellationToken)) throw new TimeoutException($"{this} gave no permit within {timeout}.");
        return new Scope(this);
    }

    /// <summary>Releases the permit taken by <see cref="Enter"/> when disposed (once).</summary>
    public struct Scope : IDisposable
    {
        private GreenSemaphore? _semaphore;

        internal Scope(GreenSemaphore semaphore) => _semaphore = semaphore;

        /// <summary>Releases the permit.</summary>
        public void Dispose()
        {
            var s = _semaphore;
            _semaphore = null;
            s?.Release();
        }
    }

    /// <summary>Describes the semaphore for logs.</summary>
    public override string ToString() => $"<{GetType().Name} count={Count}>";
}
