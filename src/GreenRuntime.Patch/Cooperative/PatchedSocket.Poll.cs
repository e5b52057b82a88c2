using System.Collections;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

// Poll and Select with a timeout: .NET offers no readiness notification for them, so the original is asked with a
// zero timeout, parking 1-20 ms between tries (Parking.PollUntil). A zero timeout runs the original as it is.
internal static partial class PatchedSocket
{
    public static bool Poll(Socket s, int microSeconds, SelectMode mode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || microSeconds == 0) return PollSlot.Call(s, microSeconds, mode);
        if (PollSlot.Call(s, 0, mode)) return true;
        return Cooperative.PollUntil(hub, () => PollSlot.Call(s, 0, mode), microSeconds < 0 ? null : TimeSpan.FromMicroseconds(microSeconds));
    }

    public static void Select(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || microSeconds == 0)
        {
            SelectSlot.Call(checkRead, checkWrite, checkError, microSeconds);
            return;
        }
        var read = Snapshot(checkRead);
        var write = Snapshot(checkWrite);
        var error = Snapshot(checkError);
        bool Ready()
        {
            Restore(checkRead, read);
            Restore(checkWrite, write);
            Restore(checkError, error);
            SelectSlot.Call(checkRead, checkWrite, checkError, 0);
            return checkRead?.Count > 0 || checkWrite?.Count > 0 || checkError?.Count > 0;
        }
        // Ready() leaves the lists filtered by the last zero-timeout select: empty on a timeout, as the original.
        Cooperative.PollUntil(hub, Ready, microSeconds < 0 ? null : TimeSpan.FromMicroseconds(microSeconds));
    }

    private static object[]? Snapshot(IList? list)
    {
        if (list is null) return null;
        var copy = new object[list.Count];
        list.CopyTo(copy, 0);
        return copy;
    }

    private static void Restore(IList? list, object[]? items)
    {
        if (list is null || items is null) return;
        list.Clear();
        foreach (var item in items) list.Add(item);
    }
}
