using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

/// <summary>Synchronous DNS lookups on a greenlet: the original lookup runs on the thread pool while only the greenlet
/// waits, or, when no pool thread is free to start it, on the greenlet's own thread with the baton released.</summary>
/// <remarks>A literal IP address never reaches the resolver, so it is answered by the original at once. A kill while the
/// pool runs the lookup ends the wait at once (the lookup finishes on the pool and its result is dropped); a lookup
/// taken back from a busy pool ends before the kill is raised. The async lookup API was the pool's business too: its
/// completion came through a pool thread, so with the pool's threads held a lookup of localhost took 4.4 s.</remarks>
internal static class CooperativeDns
{
    internal delegate IPAddress[] AddressesByFamily(string hostNameOrAddress, AddressFamily family);

    internal delegate IPHostEntry EntryByFamily(string hostNameOrAddress, AddressFamily family);

    internal static readonly OriginalSlot<Func<string, IPAddress[]>> Addresses = new(static h => Dns.GetHostAddresses(h));
    internal static readonly OriginalSlot<AddressesByFamily> AddressesFamily = new(static (h, f) => Dns.GetHostAddresses(h, f));
    internal static readonly OriginalSlot<Func<string, IPHostEntry>> Entry = new(static h => Dns.GetHostEntry(h));
    internal static readonly OriginalSlot<EntryByFamily> EntryFamily = new(static (h, f) => Dns.GetHostEntry(h, f));
    internal static readonly OriginalSlot<Func<IPAddress, IPHostEntry>> EntryAddress = new(static a => Dns.GetHostEntry(a));

    public static IPAddress[] GetHostAddresses(string hostNameOrAddress)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || IsLiteral(hostNameOrAddress)
            ? Addresses.Call(hostNameOrAddress)
            : Resolve(hub, static h => Addresses.Call(h), hostNameOrAddress);
    }

    public static IPAddress[] GetHostAddresses(string hostNameOrAddress, AddressFamily family)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || IsLiteral(hostNameOrAddress)
            ? AddressesFamily.Call(hostNameOrAddress, family)
            : Resolve(hub, static s => AddressesFamily.Call(s.hostNameOrAddress, s.family), (hostNameOrAddress, family));
    }

    public static IPHostEntry GetHostEntry(string hostNameOrAddress)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || hostNameOrAddress is null
            ? Entry.Call(hostNameOrAddress!)
            : Resolve(hub, static h => Entry.Call(h), hostNameOrAddress);
    }

    public static IPHostEntry GetHostEntry(string hostNameOrAddress, AddressFamily family)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || hostNameOrAddress is null
            ? EntryFamily.Call(hostNameOrAddress!, family)
            : Resolve(hub, static s => EntryFamily.Call(s.hostNameOrAddress, s.family), (hostNameOrAddress, family));
    }

    public static IPHostEntry GetHostEntry(IPAddress address)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || address is null
            ? EntryAddress.Call(address!)
            : Resolve(hub, static a => EntryAddress.Call(a), address);
    }

    // Null, empty and IP-literal arguments never block: let the original answer (or throw) exactly.
    private static bool IsLiteral(string? host) => string.IsNullOrEmpty(host) || IPAddress.TryParse(host, out _);

    /// <summary>The original lookup on the thread pool while the greenlet parks, or released when the pool is late
    /// (<see cref="PoolClaim"/>: a lookup ends by itself, within the resolver's timeouts).</summary>
    private static T Resolve<TState, T>(Hub hub, Func<TState, T> lookup, TState state)
    {
        var claim = PoolClaim.Offer();
        if (claim == PoolClaim.Late) return PoolClaim.RunReleased(lookup, state, WaitReason.Dns);
        var task = Task.Run(() => claim is null || claim.PoolStarts() ? lookup(state) : default!);
        if (!PoolClaim.Wait(hub, task, claim, WaitReason.Dns)) return PoolClaim.RunReleased(lookup, state, WaitReason.Dns);
        return task.GetAwaiter().GetResult(); // the original's result or exception
    }
}
