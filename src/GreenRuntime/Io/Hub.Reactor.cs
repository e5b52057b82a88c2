using GreenRuntime.Io;

namespace GreenRuntime;

public sealed partial class Hub
{
    private Reactor? _reactor;
    private bool _reactorRefused;
    private int _stepsSinceIoPoll;

    /// <summary>Scheduling steps between two non-waiting polls while greenlets keep the ready queue busy.</summary>
    private const int IoPollInterval = 64;

    /// <summary>
    /// The hub's epoll reactor, created on first use; null where there is none (not Linux x64, or the kernel
    /// refused one — logged once): callers then wait through the .NET async engine. Hub-only.
    /// </summary>
    internal Reactor? Reactor => _reactor ?? CreateReactor();

    private Reactor? CreateReactor()
    {
        if (_reactorRefused || _closed || !Epoll.IsSupported) return null;
        // A carrier sleeping lent on the inbox signal's futex would not hear its hand-back once unparks write the eventfd.
        RetireLentIdler();
        try
        {
            _reactor = new Reactor(this);
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or EntryPointNotFoundException)
        {
            _reactorRefused = true;
            Log.ReactorUnavailable(_logger, ToString(), e.Message);
            return null;
        }
        // From now on the idle baton holder sleeps in epoll, so a post to the inbox must write the eventfd.
        _inboxSignal.WakeThroughEventFd(_reactor.EventFd);
        return _reactor;
    }

    /// <summary>An operation outside the hub starts that will wake a parked greenlet: LoopExit must wait for it.</summary>
    internal void BeginExternalWait() => _pendingExternal++;

    internal void EndExternalWait() => _pendingExternal--;

    /// <summary>Between two scheduling steps: a poll that does not wait, so busy greenlets cannot starve I/O.</summary>
    private void PollIoIfDue()
    {
        if (++_stepsSinceIoPoll < IoPollInterval) return;
        _stepsSinceIoPoll = 0;
        _reactor!.Poll(0, _inboxSignal);
    }

    /// <summary>Makes the next scheduling step poll the reactor (a greenlet that gives way after a long turn of calls that
    /// did not wait: those waiting for I/O get their turn too, not only what is already queued).</summary>
    private void PollIoAtNextStep() => _stepsSinceIoPoll = IoPollInterval;

    /// <summary>Nothing is ready: sleep until I/O, a post to the inbox, or <paramref name="timeoutNs"/> (negative: no limit).</summary>
    private void SleepInReactor(long timeoutNs)
    {
        _stepsSinceIoPoll = 0;
        _reactor!.Poll(timeoutNs, _inboxSignal);
    }

    private void DisposeReactor()
    {
        if (_reactor == null) return;
        // Posts that already took the eventfd may still write it: it stays open until the last of them is done (SharedEventFd).
        _inboxSignal.WakeThroughEventFd(null);
        _reactor.Dispose();
        _reactor = null;
    }
}
