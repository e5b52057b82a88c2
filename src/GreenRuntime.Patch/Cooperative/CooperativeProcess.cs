using System.Diagnostics;
using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <c>Process.Start</c> and <c>Environment.Exit</c> on a greenlet run with the baton released. <c>Process.WaitForExit</c> on a greenlet: the
/// original wait on the greenlet's own thread with the baton released (for a process with <c>EnableRaisingEvents</c>, the
/// original's private wait, without the <c>Exited</c> event); when no carrier is left, a park on <c>WaitForExitAsync</c>
/// (which also waits for redirected output to be read to the end). Either way the original then finishes the call on the
/// greenlet, which no longer blocks and raises <c>Exited</c> there exactly as it would have.
/// </summary>
internal static class CooperativeProcess
{
    internal static readonly OriginalSlot<Func<Process, int, bool>> WaitInt = new(static (p, ms) => p.WaitForExit(ms));
    internal static readonly OriginalSlot<Action<Process>> WaitNone = new(static p => p.WaitForExit());
    internal static readonly OriginalSlot<Func<Process, TimeSpan, bool>> WaitTimeSpan = new(static (p, t) => p.WaitForExit(t));
    internal static readonly OriginalSlot<Func<Process, bool>> StartSlot = new(static p => p.Start());

    internal static readonly OriginalSlot<Action<int>> ExitSlot = new(static code => Environment.Exit(code));

    private static readonly Func<Process, bool> s_startReleased = static p => StartSlot.Call(p);

    private static readonly Func<int, bool> s_exitReleased = static code =>
    {
        ExitSlot.Call(code);
        return true; // never reached: the process has ended
    };

    /// <summary>Replaces <see cref="Environment.Exit"/>: on a greenlet, the original with the baton released. It runs the
    /// <c>ProcessExit</c> handlers on the calling thread before the process ends, and graceful-shutdown code waits there
    /// for workers to notice a flag and stop: with the baton held, no greenlet ran, so such a handler waited out its
    /// timeout (or for ever). Nothing pending is raised: exiting is not a blocking point to cancel.</summary>
    public static void Exit(int exitCode)
    {
        if (Cooperative.ParkingHub() is null || !Parking.CanReleaseBaton) ExitSlot.Call(exitCode);
        else Parking.RunReleased(s_exitReleased, exitCode, WaitReason.Other, cancellationPoint: false);
    }

    /// <summary>Replaces <see cref="Process.Start()"/> (every static <c>Process.Start</c> ends there): the original on
    /// the greenlet's own thread with the baton released. On Linux the parent waits in native code until the child has
    /// exec'd (vfork), which took 1 ms for <c>sleep</c> and 70–200 ms for a Python interpreter on a loaded machine, all
    /// of it with the hub stopped. A kill already pending is raised before the start; one that comes during it waits for
    /// the greenlet's next blocking point, so a process that was started is never lost to its caller.</summary>
    public static bool Start(Process process)
    {
        if (Cooperative.ParkingHub() is null || !Parking.CanReleaseBaton) return StartSlot.Call(process);
        if (Parking.CancellationPending) Parking.Yield(); // raises it: nothing was started yet
        return Parking.RunReleased(s_startReleased, process, WaitReason.Blocking, cancellationPoint: false);
    }

    public static bool WaitForExit(Process process, int milliseconds)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || milliseconds is 0 or < -1) return WaitInt.Call(process, milliseconds);
        return WaitOnHub(hub, process, milliseconds);
    }

    public static void WaitForExit(Process process)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null)
        {
            WaitNone.Call(process);
            return;
        }
        WaitOnHub(hub, process, Timeout.Infinite);
    }

    public static bool WaitForExit(Process process, TimeSpan timeout)
    {
        var hub = Cooperative.ParkingHub();
        long ms = (long)timeout.TotalMilliseconds;
        if (hub is null || ms is 0 or < -1 or > int.MaxValue) return WaitTimeSpan.Call(process, timeout);
        return WaitOnHub(hub, process, (int)ms);
    }

    private static readonly Func<(Process Process, int Ms), bool> s_waitReleased = static s => WaitInt.Call(s.Process, s.Ms);

    /// <summary>The private <c>Process.WaitForExitCore(int)</c>: the original's wait (for the exit, and with an infinite
    /// timeout for redirected output to be read to the end) without the <c>Exited</c> event the original raises after it;
    /// null on a runtime without it.</summary>
    private static readonly Func<Process, int, bool>? s_waitCore =
        typeof(Process).GetMethod("WaitForExitCore", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(int)])?.CreateDelegate<Func<Process, int, bool>>();

    private static readonly Func<(Process Process, int Ms), bool> s_waitCoreReleased = static s => s_waitCore!(s.Process, s.Ms);

    private static bool WaitOnHub(Hub hub, Process process, int milliseconds)
    {
        // Validates like the original (no process associated -> InvalidOperationException) and answers at once
        // for a process that has exited, when no draining of redirected output was asked for.
        if (WaitInt.Call(process, 0) && milliseconds != Timeout.Infinite) return true;
        // The original wait on the greenlet's own thread, the baton released: the process's exit wakes that thread
        // directly. WaitForExitAsync hears of the exit through a thread-pool callback, so with the pool's threads held
        // by legacy blocking work the first wait of a process took 0.9 s instead of 1 ms. A kill interrupts the wait.
        if (Parking.CanReleaseBaton)
        {
            if (!process.EnableRaisingEvents)
                return Parking.RunReleased(s_waitReleased, (process, milliseconds), WaitReason.Other, interruptible: true);
            // With EnableRaisingEvents the original raises Exited on the thread that waited once the wait is over, which
            // must then be the greenlet holding the baton, not a released thread running beside the hub's greenlets: the
            // released thread runs the original's wait alone, and the original, asked again on the greenlet, returns at
            // once and raises the event there (unless the thread pool's exit callback raised it first, as on threads).
            // Parked on WaitForExitAsync instead, the wake came from that pool callback: 0.8-1 s with the pool's threads
            // held, against 0.1 s on threads.
            if (s_waitCore != null)
            {
                return Parking.RunReleased(s_waitCoreReleased, (process, milliseconds), WaitReason.Other, interruptible: true)
                    && WaitInt.Call(process, milliseconds); // exited (and drained, for an infinite wait): returns at once
            }
        }
        using var cancel = new CancellationTokenSource();
        var exited = process.WaitForExitAsync(cancel.Token);
        if (!Cooperative.Park(hub, exited, Cooperative.WaitTimeout(milliseconds), WaitReason.Other, cancel))
        {
            Parking.CancelQuietly(cancel);
            return WaitInt.Call(process, 0);
        }
        if (exited.IsFaulted) _ = exited.Exception;
        return WaitInt.Call(process, milliseconds); // exited and drained: returns at once
    }
}
