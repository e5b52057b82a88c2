// A hub of a HubGroup: its main greenlet runs on a dedicated thread and only waits for work posted from outside.
//
// The group places greenlets with StartFromAnyThread (a post to the inbox unless the caller is on this hub) and reads
// Load to find the least-loaded hub. A greenlet never moves to another hub: everything it touches of its hub (ready
// queue, timers, carriers, reactor) stays single-threaded under the hub's baton.

using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    // Every hub not yet disposed, copy-on-write (hubs come and go rarely; readers take no lock).
    private static Hub[] s_hubs = [];
    private static readonly Sync.SyncLock s_hubsLock = new();
    private Thread _thread = null!;

    private static void Register(Hub hub)
    {
        hub._thread = Thread.CurrentThread;
        hub._onPoolThread = hub._thread.IsThreadPoolThread;
        s_hubsLock.Enter();
        // Hubs of threads that ended without disposing them are dropped here, so they are not kept alive forever.
        s_hubs = [.. Array.FindAll(s_hubs, h => h._thread.IsAlive), hub];
        s_hubsLock.Exit();
    }

    /// <summary>Every hub not yet disposed (tests: who else holds carriers of a shared pool).</summary>
    internal static Hub[] Live => Volatile.Read(ref s_hubs);

    private static void Unregister(Hub hub)
    {
        s_hubsLock.Enter();
        s_hubs = Array.FindAll(s_hubs, h => h != hub);
        s_hubsLock.Exit();
    }

    /// <summary>
    /// Whether another hub of the process may still run greenlets: not disposed, and its thread alive (a hub a plain
    /// thread got implicitly and never disposed stops counting when that thread ends). While one may, a wait on a
    /// primitive can be ended by that hub's greenlets, so it counts as outstanding for LoopExit (Sync/Blocking.cs).
    /// Only hubs whose loop may run count (<see cref="LoopMayRun"/>): counting a hub left on a pool thread would turn
    /// every later deadlock of the process into a hang.
    /// </summary>
    internal bool OtherHubsMayRun
    {
        get
        {
            foreach (var h in Volatile.Read(ref s_hubs))
                if (h != this && !h._disposed && h._thread.IsAlive && h.LoopMayRun) return true;
            return false;
        }
    }

    /// <summary>
    /// Whether this hub's loop can still run: always for a hub of a thread of its own (it runs whenever that thread
    /// blocks on it), but for one that a blocking call bound to a thread-pool thread only while that call runs (its main
    /// greenlet is parked). Once the work item has moved on, nothing runs that hub again: a timer on it never fires.
    /// </summary>
    internal bool LoopMayRun => !_onPoolThread || MainGreenlet.State == GreenletState.Parked;

    /// <summary>Whether the hub belongs to a thread-pool thread (see <see cref="LoopMayRun"/>).</summary>
    private bool _onPoolThread;

    /// <summary>The group this hub belongs to, or null.</summary>
    internal HubGroup? Group { get; private set; }

    private bool _stopRequested;
    private Exception? _loopFailure;
    private int _queuedStarts;

    /// <summary>
    /// How busy the hub is, for placement: greenlets placed on it whose start is still in the inbox, plus the ready
    /// queue, plus one while it runs something. Read from any thread without synchronisation: a recent value is enough.
    /// </summary>
    internal int Load => Volatile.Read(ref _queuedStarts) + ReadyCount + (_idle ? 0 : 1);

    /// <summary>Starts <paramref name="g"/> (a greenlet of this hub) from any thread: at once on this hub, else through the inbox.</summary>
    internal void StartFromAnyThread(Greenlet g)
    {
        g.MarkStarted();
        if (IsOnHubThread)
        {
            StartGreenlet(g);
            return;
        }
        Interlocked.Increment(ref _queuedStarts);
        PostItem(RunItem.ForCallback(s_startQueued, g));
    }

    private static readonly Action<object?> s_startQueued = static state =>
    {
        var g = (Greenlet)state!;
        var hub = g.Hub;
        Interlocked.Decrement(ref hub._queuedStarts);
        if (g.State == GreenletState.Created) hub.StartGreenlet(g); // not when it was killed before its start arrived
    };

    /// <summary>Makes this new hub one of <paramref name="group"/>'s, before the group hands it any work.</summary>
    internal void JoinGroup(HubGroup group)
    {
        AssertOnHub();
        Group = group;
    }

    /// <summary>
    /// Runs the hub for <paramref name="group"/> on the calling (dedicated) thread, from its main greenlet, until
    /// <see cref="RequestStop"/>: the main greenlet parks, and the scheduler runs whatever is posted. It counts as an
    /// outstanding wait, so the hub never declares LoopExit: work may always come from outside.
    /// </summary>
    internal void ServeGroup(HubGroup group)
    {
        AssertOnHub();
        Debug.Assert(Group == group, "JoinGroup came first");
        _pendingExternal++;
        try
        {
            while (!_stopRequested)
            {
                var token = BeginPark(WaitReason.Other, raise: false);
                try
                {
                    EndPark(token);
                }
                catch (Exception) when (_loopFailure != null)
                {
                    throw _loopFailure;
                }
                catch (Exception e) when (!_stopRequested)
                {
                    // Someone killed or woke the main greenlet with an exception: it goes on serving.
                    Log.CallbackFailed(_logger, e, "main greenlet of a hub group");
                }
            }
        }
        finally
        {
            _pendingExternal--;
        }
    }

    /// <summary>Makes <see cref="ServeGroup"/> throw <paramref name="failure"/> (tests of how a group reports a failed hub).</summary>
    internal void FailLoop(Exception failure) => PostItem(RunItem.ForCallback(static s =>
    {
        var (hub, error) = ((Hub, Exception))s!;
        hub._loopFailure = error;
        var main = hub.MainGreenlet;
        hub.TryWake(new WakeToken(main, main.ParkSequence), null, error);
    }, (this, failure)));

    /// <summary>Ends <see cref="ServeGroup"/> after what is already in the inbox. Safe from any thread.</summary>
    internal void RequestStop() => PostItem(RunItem.ForCallback(static s =>
    {
        var hub = (Hub)s!;
        hub._stopRequested = true;
        var main = hub.MainGreenlet;
        hub.TryWake(new WakeToken(main, main.ParkSequence));
    }, this));
}
