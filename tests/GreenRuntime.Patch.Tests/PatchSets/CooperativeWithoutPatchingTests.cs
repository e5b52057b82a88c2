using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Cooperative;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// The cooperative implementations called directly, with nothing patched: they work without the detour
/// engine, on a hub and off it.
/// </summary>
[TestFixture]
public class CooperativeWithoutPatchingTests
{
    [OneTimeSetUp]
    public void NothingPatched() => PatchAssemblyAccess.UndoAll();

    [Test]
    public void SleepParksOnAHubAndBlocksOffIt()
    {
        var watch = Stopwatch.StartNew();
        CooperativeTime.Sleep(30);
        Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(25)), "off a hub: the original");
        using var hub = new Hub();
        watch.Restart();
        Green.JoinAll(Enumerable.Range(0, 20).Select(_ => Green.Spawn(() => CooperativeTime.Sleep(100))));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(20 * 100 / 3)));
    }

    [Test]
    public void ReceiveParksAndAKilledReceiveLosesNothing()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndpoint);
        using var server = listener.AcceptSocket();
        using var hub = new Hub();
        var buffer = new byte[8];
        var killed = Green.Spawn(() => PatchedSocket.Receive(client, buffer, 0, buffer.Length, SocketFlags.None, out _));
        var order = new List<string>();
        var other = Green.Spawn(() => order.Add("other ran"));
        Green.Sleep(30);
        Assert.That(killed.WaitReason, Is.EqualTo(WaitReason.Socket));
        killed.Kill();
        server.Send([1, 2, 3]);
        int n = PatchedSocket.Receive(client, buffer, 0, buffer.Length, SocketFlags.None, out var error);
        Assert.That(error, Is.EqualTo(SocketError.Success));
        Assert.That(buffer[..n], Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(order, Is.EqualTo(new[] { "other ran" }));
        other.Join();
    }

    [Test]
    public void InternalWaitParksUntilAnotherGreenletCompletesTheTask()
    {
        using var hub = new Hub();
        var source = new TaskCompletionSource();
        Green.Spawn(() => source.SetResult());
        Assert.That(CooperativeTask.InternalWait(source.Task, Timeout.Infinite, CancellationToken.None), Is.True);
        Assert.That(CooperativeTask.InternalWait(new TaskCompletionSource().Task, 30, CancellationToken.None), Is.False);
    }
}
