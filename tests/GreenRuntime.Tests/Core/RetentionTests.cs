namespace GreenRuntime.Tests.Core;

/// <summary>A finished greenlet keeps only its outcome: not its body, its captured state, nor its parent.</summary>
public class RetentionTests : HubTest
{
    private sealed class Respawner
    {
        private readonly int _left;
        private readonly Action? _atTheEnd;
        private readonly byte[] _payload = new byte[256]; // captured state each generation carries
        public Respawner(int left, Action? atTheEnd = null) { _left = left; _atTheEnd = atTheEnd; }

        public void Run()
        {
            _payload[0] = 1;
            if (_left > 0) Green.Spawn(new Respawner(_left - 1, _atTheEnd).Run);
            else _atTheEnd?.Invoke(); // measured from the last generation: the whole chain is reachable from here if anything retains it
        }
    }

    [Test]
    public void AGreenletThatRespawnsItselfAMillionTimesKeepsTheHeapFlat()
    {
        Green.Spawn(new Respawner(10_000).Run);
        Green.Sleep(20); // warm-up: carriers, JIT
        long before = GC.GetTotalMemory(forceFullCollection: true);
        long after = 0;
        var first = Green.Spawn(new Respawner(1_000_000, () => after = GC.GetTotalMemory(forceFullCollection: true)).Run);
        while (Hub.AliveCount > 0) Green.Sleep(10);
        // Retaining the chain would cost > 300 MB (greenlet + closure + payload per generation).
        Assert.That(after - before, Is.LessThan(8 * 1024 * 1024), $"heap grew by {(after - before) / 1024} KiB");
        Assert.That(first.Dead, Is.True);
        Assert.That(first.Parent, Is.Null, "a finished greenlet forgets its parent");
        GC.KeepAlive(first);
    }

    [Test]
    public void AFinishedGreenletReleasesItsBodysCapturedState()
    {
        var weak = Capture(out var g);
        g.Join();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.That(weak.IsAlive, Is.False, "the closure's captured object was released with the body");
        Assert.That(g.Successful, Is.True);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference Capture(out Greenlet g)
    {
        var big = new byte[1024];
        g = Green.Spawn(() => big[0] = 1);
        return new WeakReference(big);
    }
}
