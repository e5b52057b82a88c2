namespace GreenRuntime.Detours;

/// <summary>
/// Reads the size of a ReadyToRun body from its image's table of runtime functions, so that scans of the body stop
/// at its real end instead of at heuristics.
/// </summary>
/// <remarks>
/// <para>
/// ReadyToRun code has no code header in front of it; its sizes are in the image. The runtime maps a ReadyToRun
/// PE file with its headers at the image base and each section at base + RVA; the base is the nearest mapping of
/// the file below the body whose headers check out.
/// From there: the PE header (<c>e_lfanew</c> at 0x3C, PE32+ optional header), the CLI header (data directory
/// 14), its <c>ManagedNativeHeader</c> (at +64) pointing to the ReadyToRun header (signature <c>RTR</c>, section
/// count at +12, sections from +16 as type/RVA/size triples), and the section of type 102, RuntimeFunctions: an
/// array of (begin, end, unwind data) RVAs sorted by begin. The record that begins exactly at the body's RVA
/// gives its length (funclets have records of their own).
/// </para>
/// <para>
/// Every step is checked (mapped and readable, signatures, bounds); anything unexpected — an image the runtime
/// copied into anonymous memory, a composite image laid out differently — answers "unknown", and callers fall
/// back to their heuristics. Tables are cached per image. Called under the engine's lock.
/// </para>
/// </remarks>
internal static unsafe class ReadyToRunCode
{
    private const uint ReadyToRunSignature = 0x00525452; // "RTR\0"
    private const uint RuntimeFunctionsSection = 102;
    private const int RuntimeFunctionSize = 12;

    private static readonly Dictionary<nint, (nint Table, int Count, uint ImageSize)> Tables = new();

    /// <summary>The length in bytes of the ReadyToRun body at <paramref name="body"/>, or null when unknown.</summary>
    public static int? TryReadBodySize(nint body)
    {
        if (CodeMemory.FindRegion(body) is not { } region || region.Path.Length == 0 || (region.Protection & Libc.ProtExec) == 0)
        {
            return null;
        }

        // The runtime's mapping of the image: the nearest mapping of the same file below the body whose headers
        // lead to a ReadyToRun runtime-function table covering the body. (The file is also mapped flat, at file
        // offsets, for its metadata; that mapping starts with "MZ" too, but RVAs are not offsets into it, so its
        // chain of headers does not check out.)
        nint image = 0;
        (nint Table, int Count, uint ImageSize) table = default;
        foreach (nint start in CodeMemory.MappingsOfAtOrBelow(region.Path, body))
        {
            if (!Tables.TryGetValue(start, out table))
            {
                table = ReadTable(start);
                Tables[start] = table;
            }

            if (table.Count > 0 && (ulong)(body - start) < table.ImageSize)
            {
                image = start;
                break;
            }
        }

        if (image == 0)
        {
            return null;
        }

        ulong rva = (ulong)(body - image);

        int lo = 0, hi = table.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            uint* record = (uint*)(table.Table + (mid * RuntimeFunctionSize));
            if (record[0] == rva)
            {
                uint size = record[1] - record[0];
                return record[1] > record[0] && size < 16 * 1024 * 1024 ? (int)size : null;
            }

            if (record[0] < rva)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return null;
    }

    /// <summary>Finds the RuntimeFunctions table of the image at <paramref name="image"/>; count 0 if it is not a
    /// ReadyToRun image laid out as expected.</summary>
    private static (nint Table, int Count, uint ImageSize) ReadTable(nint image)
    {
        if (!CodeMemory.IsReadable(image, 0x40) || *(ushort*)image != 0x5A4D)
        {
            return default; // no "MZ"
        }

        nint pe = image + *(int*)(image + 0x3C);
        if (!CodeMemory.IsReadable(pe, 24 + 112 + (16 * 8)) || *(uint*)pe != 0x00004550)
        {
            return default; // no "PE\0\0"
        }

        nint optional = pe + 24;
        if (*(ushort*)optional != 0x20B)
        {
            return default; // not PE32+
        }

        uint imageSize = *(uint*)(optional + 56);
        uint cliRva = *(uint*)(optional + 112 + (14 * 8));
        if (cliRva == 0 || cliRva >= imageSize || !CodeMemory.IsReadable(image + (nint)cliRva, 72) || *(uint*)(image + (nint)cliRva) != 72)
        {
            return default; // no CLI header of its fixed size (cb = 72) at that RVA
        }

        uint nativeRva = *(uint*)(image + (nint)cliRva + 64);
        nint header = image + (nint)nativeRva;
        if (nativeRva == 0 || nativeRva >= imageSize || !CodeMemory.IsReadable(header, 16) || *(uint*)header != ReadyToRunSignature)
        {
            return default;
        }

        uint sections = *(uint*)(header + 12);
        if (sections > 256 || !CodeMemory.IsReadable(header + 16, (int)sections * 12))
        {
            return default;
        }

        for (int i = 0; i < sections; i++)
        {
            uint* section = (uint*)(header + 16 + (i * 12));
            if (section[0] != RuntimeFunctionsSection)
            {
                continue;
            }

            uint rva = section[1], size = section[2];
            int count = (int)(size / RuntimeFunctionSize);
            if (rva == 0 || rva + size > imageSize || !CodeMemory.IsReadable(image + (nint)rva, (int)size))
            {
                return default;
            }

            return (image + (nint)rva, count, imageSize);
        }

        return default;
    }
}
