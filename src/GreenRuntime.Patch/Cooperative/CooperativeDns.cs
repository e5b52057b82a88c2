using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Cooperative;

/// <summary>Synchronous DNS lookups on a greenlet: the async lookup runs while only the greenlet waits.</summary>
/// <remarks>A literal IP address never reaches the resolver, so it is answered by the original at once.
/// A kill cancels the lookup (its result, if it still arrives, is dropped).</remarks>
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
            : Resolve(hub, ct => Dns.GetHostAddressesAsync(hostNameOrAddress, ct));
    }

    public static IPAddress[] GetHostAddresses(string hostNameOrAddress, AddressFamily family)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || IsLiteral(hostNameOrAddress)
            ? AddressesFamily.Call(hostNameOrAddress, family)
            : Resolve(hub, ct => Dns.GetHostAddressesAsync(hostNameOrAddress, family, ct));
    }

    public static IPHostEntry GetHostEntry(string hostNameOrAddress)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || hostNameOrAddress is null
            ? Entry.Call(hostNameOrAddress!)
            : Resolve(hub, ct => Dns.GetHostEntryAsync(hostNameOrAddress, ct));
    }

    public static IPHostEntry GetHostEntry(string hostNameOrAddress, AddressFamily family)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || hostNameOrAddress is null
            ? EntryFamily.Call(hostNameOrAddress!, family)
            : Resolve(hub, ct => Dns.GetHostEntryAsync(hostNameOrAddress, family, ct));
    }

    public static IPHostEntry GetHostEntry(IPAddress address)
    {
        var hub = Cooperative.ParkingHub();
        return hub is null || address is null
            ? EntryAddress.Call(address!)
            : Resolve(hub, _ => Dns.GetHostEntryAsync(address));
    }

    // Null, empty and IP-literal arguments never block: let the original answer (or throw) exactly.
    private static bool IsLiteral(string? host) => string.IsNullOrEmpty(host) || IPAddress.TryParse(host, out _);

    private static T Resolve<T>(Hub hub, Func<CancellationToken, Task<T>> start)
    {
        using var cancel = new CancellationTokenSource();
        var task = start(cancel.Token);
        Cooperative.Park(hub, task, null, WaitReason.Dns, cancel);
        return task.GetAwaiter().GetResult();
    }
}
