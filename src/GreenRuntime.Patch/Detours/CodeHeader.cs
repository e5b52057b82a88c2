namespace GreenRuntime.Detours;

/// <summary>
/// Reads the size of a JIT-compiled body from the runtime's code header, so that scans of the body stop at its
/// real end instead of at heuristics.
/// </summary>
/// <remarks>
/// <para>
/// Code the JIT produces is preceded by a pointer (the 8 bytes just before the body) to the method's
/// <c>RealCodeHeader</c> in the runtime's loader heap. On .NET 10 x64 that header is: debug info, EH info and GC
/// info pointers (offsets 0, 8, 16), the MethodDesc (24), the number of unwind records (a 32-bit count at 32) and
/// the unwind records themselves from 36, 12 bytes each (begin, end, unwind data; 32-bit offsets). The first
/// record describes the main body, so <c>end - begin</c> is its length; later records are funclets placed after
/// it. The layout is re-verified by a test, and every read here is checked: the header must be readable, name the
/// method's own MethodDesc, and hold a sane record. Anything else — ReadyToRun code (which has no such header),
/// a different layout — answers "unknown", and callers fall back to their heuristics.
/// </para>
/// </remarks>
internal static unsafe class CodeHeader
{
    /// <summary>Offset of the MethodDesc pointer in the RealCodeHeader.</summary>
    public const int MethodDescOffset = 24;

    /// <summary>Offset of the 32-bit count of unwind records.</summary>
    public const int UnwindCountOffset = 32;

    /// <summary>Offset of the first unwind record (begin, end, unwind data: three 32-bit values).</summary>
    public const int FirstUnwindRecordOffset = 36;

    /// <summary>Bodies larger than this are not believed (the JIT refuses methods far below it).</summary>
    private const uint MaxBodySize = 16 * 1024 * 1024;

    /// <summary>
    /// The length in bytes of the JIT-compiled body at <paramref name="body"/> of the method
    /// <paramref name="methodDesc"/>, or null when it cannot be read with confidence.
    /// </summary>
    public static int? TryReadBodySize(nint body, nint methodDesc)
    {
        if (body == 0 || methodDesc == 0 || !CodeMemory.IsReadable(body - sizeof(nint), sizeof(nint)))
        {
            return null;
        }

        // Code in a file mapping is an image's (ReadyToRun) code: it has no code header, and the 8 bytes before
        // it are whatever precedes it in the image. Taking them for a pointer would mostly find unmapped
        // addresses, and every such miss costs a re-read of the memory map (~1 ms each, three per detour).
        // JIT-compiled code lives in anonymous memory or in the runtime's W^X double mapping (a memfd).
        if (CodeMemory.FindRegion(body) is { Path.Length: > 0 } image && !image.Path.StartsWith("/memfd:", StringComparison.Ordinal))
        {
            return null;
        }

        nint header = *(nint*)(body - sizeof(nint));
        if (header == 0 || (header & 7) != 0 || !CodeMemory.IsReadable(header, FirstUnwindRecordOffset + 12))
        {
            return null;
        }

        if (*(nint*)(header + MethodDescOffset) != methodDesc)
        {
            return null;
        }

        uint records = *(uint*)(header + UnwindCountOffset);
        uint begin = *(uint*)(header + FirstUnwindRecordOffset);
        uint end = *(uint*)(header + FirstUnwindRecordOffset + 4);
        if (records == 0 || records > 1024 || end <= begin || end - begin > MaxBodySize)
        {
            return null;
        }

        return (int)(end - begin);
    }
}
