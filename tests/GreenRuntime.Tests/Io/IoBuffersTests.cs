using System.Buffers;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.Io;

/// <summary>
/// The runtime's I/O buffers come from a pool whose memory does not grow with the number of threads. Found by the
/// soak: with ArrayPool.Shared, every carrier thread that returned a buffer kept its own cached copy (about 150 MiB
/// of arrays held by some 70 idle carriers).
/// </summary>
public class IoBuffersTests
{
    [Test]
    public void ABufferReturnedOnOneThreadIsRentedAgainOnAnother()
    {
        // A per-thread cache would keep the array on the first thread and hand the second a new one.
        const int size = 200_000;
        byte[]? first = null, second = null;
        var a = new Thread(() => { first = IoBuffers.Pool.Rent(size); IoBuffers.Pool.Return(first); });
        a.Start();
        a.Join();
        var b = new Thread(() => { second = IoBuffers.Pool.Rent(size); IoBuffers.Pool.Return(second); });
        b.Start();
        b.Join();
        Assert.That(second, Is.SameAs(first), "one pool for every thread: what a carrier returns is reused by the next one");
    }

    [Test]
    public void ThePoolKeepsABoundedNumberOfArraysPerSize()
    {
        // The largest size class: an exhausted class borrows from larger ones, and there is none above this one.
        const int size = IoBuffers.MaxPooledLength;
        var rented = Enumerable.Range(0, IoBuffers.MaxArraysPerBucket + 3).Select(_ => IoBuffers.Pool.Rent(size)).ToList();
        foreach (var array in rented) IoBuffers.Pool.Return(array);
        var again = Enumerable.Range(0, IoBuffers.MaxArraysPerBucket + 3).Select(_ => IoBuffers.Pool.Rent(size)).ToList();
        int reused = again.Count(array => rented.Any(r => ReferenceEquals(r, array)));
        foreach (var array in again) IoBuffers.Pool.Return(array);
        Assert.That(reused, Is.EqualTo(IoBuffers.MaxArraysPerBucket), "the returns above the bound were dropped to the GC");
        Assert.That(IoBuffers.Pool, Is.Not.SameAs(ArrayPool<byte>.Shared));
    }
}
