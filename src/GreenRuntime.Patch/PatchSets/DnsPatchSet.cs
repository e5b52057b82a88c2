using System.Net;
using System.Net.Sockets;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>Every synchronous <see cref="Dns"/> lookup: the small overloads and the large ones they call.</summary>
internal sealed class DnsPatchSet : PatchSet
{
    public static readonly DnsPatchSet Instance = new();

    public override string Name => "Dns";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        Point(typeof(Dns), nameof(Dns.GetHostAddresses), [typeof(string), typeof(AddressFamily)], typeof(CooperativeDns), nameof(CooperativeDns.GetHostAddresses), CooperativeDns.AddressesFamily),
        Point(typeof(Dns), nameof(Dns.GetHostAddresses), [typeof(string)], typeof(CooperativeDns), nameof(CooperativeDns.GetHostAddresses), CooperativeDns.Addresses),
        Point(typeof(Dns), nameof(Dns.GetHostEntry), [typeof(string), typeof(AddressFamily)], typeof(CooperativeDns), nameof(CooperativeDns.GetHostEntry), CooperativeDns.EntryFamily),
        Point(typeof(Dns), nameof(Dns.GetHostEntry), [typeof(string)], typeof(CooperativeDns), nameof(CooperativeDns.GetHostEntry), CooperativeDns.Entry),
        Point(typeof(Dns), nameof(Dns.GetHostEntry), [typeof(IPAddress)], typeof(CooperativeDns), nameof(CooperativeDns.GetHostEntry), CooperativeDns.EntryAddress),
    ];
}
