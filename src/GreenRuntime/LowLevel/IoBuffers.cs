using System.Buffers;

namespace GreenRuntime.LowLevel;

/// <summary>
/// The pool for the runtime's temporary I/O buffers (bounce buffers of patched file calls, pooled copies of span
/// sends, the servers' read and write buffers).
/// </summary>
/// <remarks>
/// Why not <see cref="ArrayPool{T}.Shared"/>: it keeps a cache per thread, one array per size class, on every
/// thread that ever returned one. The runtime returns buffers on carrier threads, and a hub may have thousands of
/// them: each carrier kept up to about 2 MiB of arrays alive for as long as it lived (a soak with about 70 carriers
/// held ~150 MiB of pooled arrays when idle, growing as more carriers met the larger size classes). This pool has
/// no per-thread cache: its memory is bounded by <see cref="MaxArraysPerBucket"/> arrays per size class up to
/// <see cref="MaxPooledLength"/>, whatever the number of carriers. Safe from any thread; larger requests are
/// plain allocations that a return drops.
/// </remarks>
public static class IoBuffers
{
    /// <summary>Largest array kept (the patched file calls bounce up to 1 MiB).</summary>
    public const int MaxPooledLength = 1 << 20;

    /// <summary>Arrays kept per size class: the pool never trims, so this bounds what it holds for good (at most
    /// about 8 MiB, most of it in the few large classes); a burst above it allocates and drops.</summary>
    public const int MaxArraysPerBucket = 4;

    /// <summary>The pool: rent with <c>Pool.Rent(n)</c> (the array may be longer), return with <c>Pool.Return(array)</c>
    /// once nothing (no pending operation either) uses it.</summary>
    public static readonly ArrayPool<byte> Pool = ArrayPool<byte>.Create(MaxPooledLength, MaxArraysPerBucket);
}
