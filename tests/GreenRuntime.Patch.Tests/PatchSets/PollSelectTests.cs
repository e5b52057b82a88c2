extern alias PatchAssembly;

using System.Collections;
using System.Net;
using System.Net.Sockets;
using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// The patched <see cref="Socket.Poll"/> and <see cref="Socket.Select(IList, IList, IList, int)"/> on a greenlet wait on
/// the hub's reactor: on a hub whose clock stands still (so no hub timer ever fires) they still wake when data comes.
/// Asked again at growing intervals, as they once were, they noticed each message 1–20 ms late (NetMQ's receives wait in
/// Poll: request/reply round trips took twice as long as on threads), and here they would never notice it.
/// </summary>
[TestFixture]
public class PollSelectTests
{
    private Hub _hub = null!;

    private sealed class StoppedClock : TimeProvider
    {
        public override long TimestampFrequency => 1_000_000_000;
        public override long GetTimestamp() => 1_000_000_000;
    }

    [OneTimeSetUp]
    public void PatchEverything() => Patching.All();

    [OneTimeTearDown]
    public void UndoEverything() => Patching.UndoAll();

    [SetUp]
    public void CreateHub() => _hub = new Hub(new HubOptions { MaxBlockingTime = null, TimeProvider = new StoppedClock() });

    [TearDown]
    public void DisposeHub() => _hub.Dispose();

    private static (Socket A, Socket B) Pair(List<Socket> owned)
    {
        var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        owned.Add(a);
        owned.Add(b);
        return (a, b);
    }

    /// <summary>Runs <paramref name="wait"/> in a greenlet, sends a byte to its socket, and says whether it ended.</summary>
    private static bool EndsWhenDataComes(Socket sender, Func<bool> wait)
    {
        bool? answer = null;
        var waiter = Green.Spawn(() => answer = wait());
        Green.Sleep(0); // it waits by now
        sender.Send(new byte[] { 1 });
        for (int i = 0; i < 2000 && answer is null; i++)
        {
            Green.Sleep(0);
            if (i % 100 == 99) Pause(); // the byte crosses loopback meanwhile
        }
        if (answer is null) waiter.Kill(); // never woken: end it, so that the hub can be disposed
        return answer == true;
    }

    /// <summary>A millisecond that is no park (a patched Thread.Sleep would wait for a hub timer, which never fires here).</summary>
    private static void Pause()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (watch.ElapsedMilliseconds < 1) Thread.SpinWait(100);
    }

    [Test]
    public void PollWithATimeoutWakesWhenDataComes()
    {
        var owned = new List<Socket>();
        try
        {
            var (a, b) = Pair(owned);
            Assert.That(EndsWhenDataComes(a, () => b.Poll(10_000_000, SelectMode.SelectRead)), Is.True);
        }
        finally
        {
            owned.ForEach(s => s.Dispose());
        }
    }

    [Test]
    public void SelectWithATimeoutWakesWhenDataComesToAnyOfItsSockets()
    {
        var owned = new List<Socket>();
        try
        {
            var pairs = Enumerable.Range(0, 3).Select(_ => Pair(owned)).ToList();
            var read = new ArrayList(pairs.Select(p => p.B).ToList());
            Assert.That(EndsWhenDataComes(pairs[1].A, () =>
            {
                Socket.Select(read, null, null, 10_000_000);
                return read.Count == 1 && read[0] == pairs[1].B;
            }), Is.True);
        }
        finally
        {
            owned.ForEach(s => s.Dispose());
        }
    }
}
