using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Reads the process memory map and writes to code pages: makes a page writable for the shortest time,
/// writes, and puts the page's <em>original</em> protection back.
/// </summary>
/// <remarks>
/// Invariant: a page's protection after a write equals its protection before it. This matters with
/// <c>DOTNET_EnableWriteXorExecute=0</c>, where the runtime keeps its code heap RWX and keeps writing new
/// methods into it: restoring "r-x" there would crash the next JIT publish. So the original protection is
/// read from <c>/proc/self/maps</c>, never assumed. All callers hold <see cref="Detour"/>'s global lock, so
/// two of our writes never race on one page's protection.
/// </remarks>
internal static class CodeMemory
{
    /// <summary>One line of /proc/self/maps.</summary>
    internal readonly record struct Region(ulong Start, ulong End, int Protection, string Path);

    public static int PageSize { get; } = Environment.SystemPageSize;

    /// <remarks>
    /// Read with raw open/read syscalls, never with managed file I/O: the engine must not call methods it
    /// may be detouring (RandomAccess.ReadAtOffset sits under every FileStream read), least of all between
    /// writing a jump and returning the Detour whose original the replacement needs.
    /// </remarks>
    public static List<Region> ReadMaps()
    {
        byte[] text = ReadProcFile("/proc/self/maps", out int length);
        var regions = new List<Region>(1024);
        int i = 0;
        while (i < length)
        {
            // "start-end perms offset dev inode   path\n"
            ulong start = ParseHex(text, ref i);
            i++; // '-'
            ulong end = ParseHex(text, ref i);
            i++; // ' '
            int protection = (text[i] == 'r' ? Libc.ProtRead : 0)
                | (text[i + 1] == 'w' ? Libc.ProtWrite : 0)
                | (text[i + 2] == 'x' ? Libc.ProtExec : 0);
            int lineEnd = Array.IndexOf(text, (byte)'\n', i, length - i);
            if (lineEnd < 0)
            {
                lineEnd = length;
            }

            int slash = Array.IndexOf(text, (byte)'/', i, lineEnd - i);
            string path = slash < 0 ? "" : System.Text.Encoding.UTF8.GetString(text, slash, lineEnd - slash);
            regions.Add(new Region(start, end, protection, path));
            i = lineEnd + 1;
        }

        return regions;
    }

    private static ulong ParseHex(byte[] text, ref int i)
    {
        ulong value = 0;
        while (true)
        {
            int c = text[i];
            int digit = c is >= '0' and <= '9' ? c - '0' : c is >= 'a' and <= 'f' ? c - 'a' + 10 : -1;
            if (digit < 0)
            {
                return value;
            }

            value = (value << 4) | (uint)digit;
            i++;
        }
    }

    [ThreadStatic]
    private static byte[]? mapsBuffer;

    /// <summary>Reads a whole /proc file into a per-thread buffer; returns it and the length read.</summary>
    private static unsafe byte[] ReadProcFile(string path, out int length)
    {
        int fd = Libc.Open(path, 0);
        if (fd < 0)
        {
            throw new InvalidOperationException($"Cannot open {path} (errno {Marshal.GetLastPInvokeError()}).");
        }

        try
        {
            byte[] buffer = mapsBuffer ??= new byte[256 * 1024];
            length = 0;
            while (true)
            {
                if (length == buffer.Length)
                {
                    Array.Resize(ref buffer, buffer.Length * 2);
                    mapsBuffer = buffer;
                }

                nint n;
                fixed (byte* p = &buffer[length])
                {
                    n = Libc.Read(fd, p, buffer.Length - length);
                }

                if (n < 0)
                {
                    throw new InvalidOperationException($"Cannot read {path} (errno {Marshal.GetLastPInvokeError()}).");
                }

                if (n == 0)
                {
                    return buffer;
                }

                length += (int)n;
            }
        }
        finally
        {
            _ = Libc.Close(fd);
        }
    }

    /// <summary>
    /// Re-reads the memory map. Called at the start of every engine operation and before the writes of a
    /// batch (under the engine lock); lookups in between use this snapshot and re-read only on a miss.
    /// Within one operation the only protection changes to code we touch are our own, and each of those is
    /// undone before it returns.
    /// </summary>
    public static void Refresh() => snapshot = ReadMaps();

    private static List<Region>? snapshot;

    /// <summary>The start addresses of the mappings of the file <paramref name="path"/> at or below
    /// <paramref name="address"/>, highest first.</summary>
    public static List<nint> MappingsOfAtOrBelow(string path, nint address)
    {
        var starts = new List<nint>();
        foreach (Region r in snapshot ??= ReadMaps())
        {
            if (r.Path == path && r.Start <= (ulong)address)
            {
                starts.Add((nint)r.Start);
            }
        }

        starts.Sort((a, b) => b.CompareTo(a));
        return starts;
    }

    /// <summary>True if some mapping is of the file <paramref name="path"/>.</summary>
    public static bool IsMapped(string path) =>
        (snapshot ??= ReadMaps()).Exists(r => r.Path == path) || (snapshot = ReadMaps()).Exists(r => r.Path == path);

    /// <summary>Returns the mapping that contains <paramref name="address"/>, or null if none does.</summary>
    public static Region? FindRegion(nint address)
    {
        return Find(snapshot ??= ReadMaps()) ?? Find(snapshot = ReadMaps());

        Region? Find(List<Region> regions)
        {
            ulong a = (ulong)address;
            foreach (Region r in regions)
            {
                if (a >= r.Start && a < r.End)
                {
                    return r;
                }
            }

            return null;
        }
    }

    /// <summary>True if <paramref name="length"/> bytes at <paramref name="address"/> are mapped readable.</summary>
    /// <remarks>Uses the snapshot, and re-reads the map before answering no (reserved pages get committed).</remarks>
    public static bool IsReadable(nint address, int length)
    {
        // Both ends: a stub at the end of its page is followed by a page the runtime maps apart (precode code and data
        // pages alternate, with other protections), so a readable range may span two mappings. Shorter than a page, it
        // has no hole in between when both ends are mapped.
        return Check() || (Refresh2() && Check());

        bool Check() => Readable(FindRegion(address)) && Readable(FindRegion(address + length - 1));

        static bool Readable(Region? r) => r is { } region && (region.Protection & Libc.ProtRead) != 0;

        static bool Refresh2()
        {
            Refresh();
            return true;
        }
    }

    /// <summary>
    /// Atomically replaces the aligned 8-byte word at <paramref name="qword"/> if it still holds
    /// <paramref name="expected"/>. Returns false (and writes nothing) if it does not.
    /// </summary>
    public static unsafe bool CompareExchangeCode(nint qword, long expected, long value)
    {
        AssertAligned(qword);
        bool swapped = false;
        WithWritablePage(qword, () =>
        {
            swapped = Interlocked.CompareExchange(ref *(long*)qword, value, expected) == expected;
        });
        return swapped;
    }

    /// <summary>
    /// Copies <paramref name="bytes"/> to code memory of our own (<see cref="NearAllocator"/>'s) that no thread
    /// executes yet.
    /// </summary>
    /// <remarks>
    /// That memory is mapped read-execute and changes protection only here, so it needs no look at the
    /// memory map (which could even be stale for it: a fresh mapping may reuse the addresses of one that
    /// was unmapped since the snapshot).
    /// </remarks>
    public static unsafe void WriteCode(nint address, ReadOnlySpan<byte> bytes)
    {
        nint first = address & ~(nint)(PageSize - 1);
        nint last = (address + bytes.Length - 1) & ~(nint)(PageSize - 1);
        nuint span = (nuint)(last - first + PageSize);
        Protect(first, span, Libc.ProtRead | Libc.ProtWrite | Libc.ProtExec);
        try
        {
            bytes.CopyTo(new Span<byte>((void*)address, bytes.Length));
        }
        finally
        {
            Protect(first, span, NearAllocator.Protection);
        }
    }

    /// <summary>Makes the page(s) of an 8-byte word writable (and still executable) while running <paramref name="write"/>.</summary>
    private static void WithWritablePage(nint address, Action write)
    {
        const int length = 8;
        nint first = address & ~(nint)(PageSize - 1);
        nint last = (address + length - 1) & ~(nint)(PageSize - 1);
        nuint span = (nuint)(last - first + PageSize);

        // The protection restored afterwards must be the page's current one. The snapshot (taken before the
        // writes of an engine operation, when every body to patch exists; re-read on a miss) is current for
        // every word we write: a page that holds code keeps its protection (W^X: the executable view stays r-x, the runtime writes through separate
        // RW views; W^X off: the code heap is committed RWX once; images keep their mapping's protection; our
        // own pages change only inside this method and are put back before it returns), and the JIT's vtable
        // stays in its read-only relocation segment. What can be stale is a page the snapshot saw reserved
        // and the runtime committed since: restoring "no access" there would take a committed page away. So a
        // page the snapshot shows without access is re-read first.
        Region? region = FindRegion(first);
        Region? lastRegion = FindRegion(last);
        if (!IsCommitted(region) || !IsCommitted(lastRegion))
        {
            Refresh();
            region = FindRegion(first);
            lastRegion = FindRegion(last);
        }

        if (region is null || lastRegion is null)
        {
            throw new InvalidOperationException(
                $"Internal error: code address 0x{address:x} is not mapped; the body walk produced a wrong address.");
        }

        int original = region.Value.Protection;
        if (lastRegion.Value.Protection != original)
        {
            throw new NotSupportedException(
                $"Cannot write code at 0x{address:x}: it spans two mappings with different protections.");
        }

        bool needsChange = (original & Libc.ProtWrite) == 0;
        if (needsChange)
        {
            Protect(first, span, original | Libc.ProtWrite | Libc.ProtRead);
        }

        try
        {
            write();
        }
        finally
        {
            if (needsChange)
            {
                Protect(first, span, original);
            }
        }
    }

    private static bool IsCommitted(Region? region) => region is { Protection: not 0 };

    /// <summary>mprotect that turns a refusal by the kernel or a security policy into a clear exception.</summary>
    public static void Protect(nint page, nuint length, int protection)
    {
        if (Libc.MProtect(page, length, protection) == 0)
        {
            return;
        }

        int errno = Marshal.GetLastPInvokeError();
        if (errno is Libc.EAccess or Libc.EPerm)
        {
            throw new UnauthorizedAccessException(
                $"The kernel refused to change code page 0x{page:x} to protection {protection} (errno {errno}). " +
                "A security policy forbids writable executable memory (SELinux deny_execmem / execmod, " +
                "PaX MPROTECT, or a seccomp filter); detours cannot work in this process.");
        }

        throw new InvalidOperationException(
            $"mprotect(0x{page:x}, {length}, {protection}) failed with errno {errno}.");
    }

    [Conditional("DEBUG")]
    private static void AssertAligned(nint qword) =>
        Debug.Assert((qword & 7) == 0, "A code word written atomically must be 8-byte aligned.");
}
