using System.Diagnostics;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <c>Process.WaitForExit</c> on a greenlet: parks on <c>WaitForExitAsync</c> (which also waits for redirected
/// output to be read to the end), then lets the original finish the call, which no longer blocks and raises
/// <c>Exited</c> exactly as it would have.
/// </summary>
internal static class CooperativeProcess
{
    internal static readonly OriginalSlot<Func<Process, int, bool>> WaitInt = new(static (p, ms) => p.WaitForExit(ms));
    internal static readonly OriginalSlot<Action<Process>> WaitNone = new(static p => p.WaitForExit());
    internal static readonly OriginalSlot<Func<Process, TimeSpan, bool>> WaitTimeSpan = new(static (p, t) => p.WaitForExit(t));

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

    private static bool WaitOnHub(Hub hub, Process process, int milliseconds)
    {
        // Validates like the original (no process associated -> InvalidOperationException) and answers at once
        // for a process that has exited, when no draining of redirected output was asked for.
        if (WaitInt.Call(process, 0) && milliseconds != Timeout.Infinite) return true;
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
