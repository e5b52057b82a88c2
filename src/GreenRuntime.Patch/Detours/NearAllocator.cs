using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Hands out small pieces of executable memory within ±2 GB of a given address, so that an
/// <c>E9 rel32</c> jump and re-encoded RIP-relative operands can reach them.
/// </summary>
/// <remarks>
/// Memory is never freed: a thread may still be executing a trampoline or stub long after its detour was
/// disposed, and there is no way to know when it left. The amount is tiny (one 64 KB chunk serves hundreds
/// of detours). Chunks are searched for in the free gaps of /proc/self/maps across the whole ±2 GB window,
/// nearest first, because guessing a few hints fails often near the runtime's busy code heap.
/// Callers hold <see cref="Detour"/>'s global lock.
/// </remarks>
internal static class NearAllocator
{
    private const int MaxChunkSize = 64 * 1024;
    private const long Reach = int.MaxValue - (2L * MaxChunkSize);

    private sealed class Chunk(nint start, int size)
    {
        public nint Start { get; } = start;
        public int Size { get; } = size;
        public int Used { get; set; }
    }

    private static readonly List<Chunk> Chunks = new();

    /// <summary>The protection of every page handed out here, outside <see cref="CodeMemory.WriteCode"/>.</summary>
    public const int Protection = Libc.ProtRead | Libc.ProtExec;

    /// <summary>
    /// Returns <paramref name="size"/> bytes of executable (read-execute) memory whose every byte is within
    /// rel32 reach of <paramref name="near"/>. Write to it with <see cref="CodeMemory.WriteCode"/>.
    /// </summary>
    /// <remarks>
    /// Free address space near the runtime's code is scarce: the runtime reserves most of the ±2 GB around
    /// its code heap for itself, leaving gaps of a few pages. So chunks are as small as one page.
    /// </remarks>
    public static nint Allocate(nint near, int size)
    {
        int rounded = (size + 15) & ~15;
        Debug.Assert(rounded <= CodeMemory.PageSize, "A near allocation must fit in one page.");
        foreach (Chunk chunk in Chunks)
        {
            if (chunk.Used + rounded <= chunk.Size && InReach(near, chunk.Start) && InReach(near, chunk.Start + chunk.Size))
            {
                nint result = chunk.Start + chunk.Used;
                chunk.Used += rounded;
                return result;
            }
        }

        Chunk fresh = MapNear(near);
        fresh.Used = rounded;
        Chunks.Add(fresh);
        return fresh.Start;
    }

    /// <summary>Returns <paramref name="size"/> bytes of executable memory anywhere (no reach requirement).</summary>
    public static nint AllocateAnywhere(int size)
    {
        nint got = Libc.MMap(0, (nuint)CodeMemory.PageSize, Protection, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (got == Libc.MapFailed)
        {
            ThrowMapFailed(Marshal.GetLastPInvokeError(), 0);
        }

        Debug.Assert(size <= CodeMemory.PageSize, "An allocation must fit in one page.");
        return got;
    }

    /// <summary>True if a rel32 displacement from <paramref name="from"/> can reach <paramref name="to"/>.</summary>
    public static bool InReach(nint from, nint to) => Math.Abs((long)to - (long)from) < Reach;

    private static Chunk MapNear(nint near)
    {
        long page = CodeMemory.PageSize;
        long lo = Math.Max((long)near - Reach, 0x10000);
        long hi = (long)near + Reach;
        var candidates = new List<(long Address, long Size)>();
        long previousEnd = 0x10000;
        foreach (CodeMemory.Region region in CodeMemory.ReadMaps())
        {
            if (region.Start > 0x7fff_ffff_ffff)
            {
                break; // [vsyscall] and anything else above user space
            }

            AddGap(previousEnd, (long)region.Start, lo, hi, (long)near, page, candidates);
            previousEnd = Math.Max(previousEnd, (long)region.End);
        }

        AddGap(previousEnd, 0x7fff_ffff_0000, lo, hi, (long)near, page, candidates);
        candidates.Sort((a, b) => Math.Abs(a.Address - (long)near).CompareTo(Math.Abs(b.Address - (long)near)));

        int lastErrno = 0;
        foreach ((long address, long size) in candidates)
        {
            nint got = Libc.MMap((nint)address, (nuint)size, Protection, Libc.MapPrivate | Libc.MapAnonymous | Libc.MapFixedNoReplace, -1, 0);
            if (got == Libc.MapFailed)
            {
                lastErrno = Marshal.GetLastPInvokeError();
                if (lastErrno is Libc.EAccess or Libc.EPerm)
                {
                    ThrowMapFailed(lastErrno, near);
                }

                continue;
            }

            if (InReach(near, got) && InReach(near, got + (nint)size))
            {
                return new Chunk(got, (int)size);
            }

            // An old kernel that ignores MAP_FIXED_NOREPLACE treats the address as a hint only.
            _ = Libc.MUnmap(got, (nuint)size);
        }

        throw new NotSupportedException(
            $"Could not map executable memory within ±2 GB of 0x{near:x} (tried {candidates.Count} free gaps, " +
            $"last errno {lastErrno}).");
    }

    /// <summary>Adds the part of a free gap that lies in the window, as close to <paramref name="near"/> as possible.</summary>
    private static void AddGap(long gapStart, long gapEnd, long lo, long hi, long near, long page, List<(long, long)> candidates)
    {
        long start = Math.Max(gapStart, lo);
        long end = Math.Min(gapEnd, hi);
        start = (start + page - 1) & ~(page - 1);
        end &= ~(page - 1);
        if (end - start < page)
        {
            return;
        }

        long size = Math.Min(end - start, MaxChunkSize);
        long address = near <= start ? start : near >= end - size ? end - size : near & ~(page - 1);
        address = Math.Clamp(address, start, end - size);
        candidates.Add((address, size));
    }

    private static void ThrowMapFailed(int errno, nint near)
    {
        if (errno is Libc.EAccess or Libc.EPerm)
        {
            throw new UnauthorizedAccessException(
                $"The kernel refused to map executable memory (errno {errno}); a security policy " +
                "(SELinux deny_execmem, PaX, seccomp) forbids it, so detours cannot work in this process.");
        }

        throw new InvalidOperationException($"mmap of executable memory near 0x{near:x} failed with errno {errno}.");
    }
}
