using System.Collections;
using System.Net.Sockets;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Cooperative;

// Poll and Select with a timeout, on a greenlet: CooperativeSocket's, which wait on the hub's reactor. A zero timeout
// runs the original as it is, after giving way when the blocking monitor asks (Cooperative.WaitingHub): a loop of
// zero-timeout polls never waits.
internal static partial class PatchedSocket
{
    public static bool Poll(Socket s, int microSeconds, SelectMode mode)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || microSeconds == 0) return PollSlot.Call(s, microSeconds, mode);
        return CooperativeSocket.Poll(s, microSeconds, mode);
    }

    public static void Select(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds)
    {
        var hub = Cooperative.WaitingHub();
        if (hub is null || microSeconds == 0)
        {
            SelectSlot.Call(checkRead, checkWrite, checkError, microSeconds);
            return;
        }
        CooperativeSocket.Select(checkRead, checkWrite, checkError, microSeconds);
    }
}
