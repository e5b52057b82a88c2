using System.Diagnostics;
using System.Globalization;
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
    public static unsafe List<Region> ReadMaps()
    {
        byte[] text = ReadProcFile("/proc/self/maps");
        var regions = new List<Region>();
        int lineStart = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            if (i < text.Length && text[i] != (byte)'\n')
            {
                continue;
            }

            if (i > lineStart)
            {
                regions.Add(ParseLine(System.Text.Encoding.UTF8.GetString(text, lineStart, i - lineStart)));
            }

            lineStart = i + 1;
        }

        return regions;
    }

    private static Region ParseLine(string line)
    {
        string[] parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        int dash = parts[0].IndexOf('-', StringComparison.Ordinal);
        ulong start = ulong.Parse(parts[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        ulong end = ulong.Parse(parts[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        string perms = parts[1];
        int protection = (perms[0] == 'r' ? Libc.ProtRead : 0)
            | (perms[1] == 'w' ? Libc.ProtWrite : 0)
            | (perms[2] == 'x' ? Libc.ProtExec : 0);
        return new Region(start, end, protection, parts.Length > 5 ? parts[5].Trim() : "");
    }

    private static unsafe byte[] ReadProcFile(string path)
    {
        int fd = Libc.Open(path, 0);
        if (fd < 0)
        {
            throw new InvalidOperationException($"Cannot open {path} (errno {Marshal.GetLastPInvokeError()}).");
        }

        try
        {
            byte[] buffer = new byte[256 * 1024];
            int length = 0;
            while (true)
            {
                if (length == buffer.Length)
                {
                    Array.Resize(ref buffer, buffer.Length * 2);
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
                    return buffer.AsSpan(0, length).ToArray();
                }

                length += (int)n;
            }
        }
        finally
        {
            _ = Libc.Close(fd);
        }
    }

    /// <summary>Returns the mapping that contains <paramref name="address"/>, or null if none does.</summary>
    public static Region? FindRegion(nint address)
    {
        ulong a = (ulong)address;
        foreach (Region r in ReadMaps())
        {
            if (a >= r.Start && a < r.End)
            {
                return r;
            }
        }

        return null;
    }

    /// <summary>True if <paramref name="length"/> bytes at <paramref name="address"/> are mapped readable.</summary>
    public static bool IsReadable(nint address, int length)
    {
        Region? r = FindRegion(address);
        return r is { } region && (region.Protection & Libc.ProtRead) != 0 && (ulong)address + (ulong)length <= region.End;
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

    /// <summary>Copies <paramref name="bytes"/> to code memory that no thread executes yet.</summary>
    public static unsafe void WriteCode(nint address, ReadOnlySpan<byte> bytes)
    {
        byte[] copy = bytes.ToArray();
        WithWritablePage(address, copy.Length, () => copy.CopyTo(new Span<byte>((void*)address, copy.Length)));
    }

    /// <summary>Makes the page(s) of an 8-byte word writable (and still executable) while running <paramref name="write"/>.</summary>
    private static void WithWritablePage(nint address, Action write) => WithWritablePage(address, 8, write);

    private static void WithWritablePage(nint address, int length, Action write)
    {
        nint first = address & ~(nint)(PageSize - 1);
        nint last = (address + length - 1) & ~(nint)(PageSize - 1);
        nuint span = (nuint)(last - first + PageSize);

        Region? region = FindRegion(first);
        Region? lastRegion = FindRegion(last);
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
