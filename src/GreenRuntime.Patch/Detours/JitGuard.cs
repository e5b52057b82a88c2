using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Refuses every JIT compile of a detoured method, so the runtime keeps running the patched body instead
/// of publishing a fresh, unpatched tier-1 (or OSR) body.
/// </summary>
/// <remarks>
/// <para>
/// The guard is a few bytes of machine code put in slot 0 (compileMethod) of the JIT's ICorJitCompiler
/// vtable. Its arguments arrive as SysV x64 registers: <c>rdi</c> = this, <c>rsi</c> = ICorJitInfo*,
/// <c>rdx</c> = CORINFO_METHOD_INFO*, whose first field (<c>ftn</c>) is the MethodDesc being compiled. The
/// stub loads <c>ftn</c>, scans the refusal table and returns CORJIT_BADCODE on a hit; otherwise it
/// tail-jumps to the original compileMethod with every argument register untouched. It uses only rax, r10,
/// r11 and flags (all caller-saved scratch registers) and never touches the stack.
/// </para>
/// <para>
/// Why machine code and not an <c>[UnmanagedCallersOnly]</c> method: a managed hook is a frame on the stack
/// of every JIT compile in the process, and when the JIT throws a C++ exception (say, an assembly is missing
/// while compiling some unrelated method) that exception cannot cross a managed frame: the process aborts
/// instead of surfacing a FileNotFoundException. The tail-jumping stub leaves no frame at all.
/// </para>
/// <para>
/// Invariants: (1) the table only grows: an entry is written before the count that covers it is published,
/// so the stub never reads an unwritten entry; entries are never removed, because a method whose tier-up was
/// refused must never be handed a fresh body whose start is not patched (after a detour is disposed its
/// method simply stays at its current tier). (2) The last qword of the table page counts refusals (the stub increments it with a locked add). (3) The stub and table pages are never freed or rewritten after
/// installation: a JIT thread may be inside the stub at any moment. (4) Only methods that already have a
/// body are added (refusing a first compile would make every call throw InvalidProgramException).
/// </para>
/// </remarks>
internal static unsafe class JitGuard
{
    private const int TableBytes = 64 * 1024;
    private const int RefusalCounterOffset = TableBytes - 8;
    private const int Capacity = (TableBytes / 8) - 2;

    private static nint table;
    private static nint stub;
    private static nint originalCompileMethod;
    private static readonly HashSet<nint> Members = new();

    /// <summary>True once the stub is in the vtable.</summary>
    public static bool IsInstalled => stub != 0;

    /// <summary>
    /// Loads the JIT, checks its version GUID, and (once per process) installs the guard. Caller holds the
    /// engine lock. Throws <see cref="PlatformNotSupportedException"/> if the JIT is not the verified one.
    /// </summary>
    public static void EnsureInstalled()
    {
        if (IsInstalled)
        {
            return;
        }

        nint jit = GetJit();
        nint vtable = *(nint*)jit;
        CheckVersion(jit, vtable);

        nint slot = vtable + (RuntimeLayout.CompileMethodSlot * sizeof(nint));
        nint original = *(nint*)slot;

        nint newTable = Libc.MMap(0, TableBytes, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (newTable == Libc.MapFailed)
        {
            throw new InvalidOperationException($"Could not map the JIT guard table (errno {Marshal.GetLastPInvokeError()}).");
        }

        byte[] code = AssembleStub(newTable, original);
        nint newStub = NearAllocator.AllocateAnywhere(code.Length);
        CodeMemory.WriteCode(newStub, code);

        table = newTable;
        originalCompileMethod = original;
        if (!CodeMemory.CompareExchangeCode(slot, original, newStub))
        {
            throw new InvalidOperationException(
                "Another component replaced the JIT's compileMethod while the detour engine was installing its guard.");
        }

        stub = newStub;
        AssertInvariants();
    }

    /// <summary>
    /// Adds a MethodDesc to the refusal table (idempotent). From the moment this returns, every compile of
    /// the method that starts later is refused. Caller holds the engine lock.
    /// </summary>
    public static void Add(nint methodDesc)
    {
        Debug.Assert(IsInstalled, "The JIT guard must be installed before methods are added to it.");
        if (!Members.Add(methodDesc))
        {
            return;
        }

        long count = Volatile.Read(ref *(long*)table);
        if (count >= Capacity)
        {
            Members.Remove(methodDesc);
            throw new NotSupportedException($"The JIT guard table is full ({Capacity} detoured methods).");
        }

        // Entry first, then the count that makes it visible (x64 stores are not reordered with stores).
        *(nint*)(table + ((count + 1) * 8)) = methodDesc;
        Volatile.Write(ref *(long*)table, count + 1);
        AssertInvariants();
    }

    /// <summary>How many compiles the guard has refused so far (diagnostics and tests).</summary>
    public static long RefusedCompiles => table == 0 ? 0 : Volatile.Read(ref *(long*)(table + RefusalCounterOffset));

    /// <summary>True if the method is in the refusal table.</summary>
    public static bool Contains(nint methodDesc) => Members.Contains(methodDesc);

    private static nint GetJit()
    {
        string path = Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), RuntimeLayout.JitLibraryName);
        bool mapped = CodeMemory.IsMapped(path);
        if (!mapped)
        {
            throw new PlatformNotSupportedException(
                $"The runtime has not loaded its JIT from {path} (DOTNET_JitPath, an alt-JIT or a non-JIT runtime " +
                "mode?); the detour engine can only guard the default JIT.");
        }

        nint library = NativeLibrary.Load(path);
        nint getJit = NativeLibrary.GetExport(library, "getJit");
        nint jit = ((delegate* unmanaged<nint>)getJit)();
        if (jit == 0)
        {
            throw new PlatformNotSupportedException("getJit() returned null.");
        }

        return jit;
    }

    private static void CheckVersion(nint jit, nint vtable)
    {
        Guid version;
        nint getVersion = *(nint*)(vtable + (RuntimeLayout.GetVersionIdentifierSlot * sizeof(nint)));
        ((delegate* unmanaged<nint, Guid*, void>)getVersion)(jit, &version);
        if (version != RuntimeLayout.JitVersionIdentifier)
        {
            throw new PlatformNotSupportedException(
                $"The JIT's version identifier is {version}, but the detour engine was verified against " +
                $"{RuntimeLayout.JitVersionIdentifier} (.NET {RuntimeLayout.SupportedMajor}). The JIT-EE interface " +
                "changed; re-verify the layout (docs/detours.md) before enabling detours on this runtime.");
        }
    }

    /// <summary>The guard stub; see the type remarks for the register contract.</summary>
    /// <remarks>
    /// Written out byte by byte rather than with Iced's assembler: the stub never changes, and the assembler's
    /// first use costs 20-40 ms of JIT and table set-up in every process that patches (most of
    /// <c>Patch.All</c>'s start-up budget). A test decodes these bytes with Iced and compares them with the
    /// instructions listed here. Position-independent (only rip-relative to its own data), so any base works.
    /// </remarks>
    internal static byte[] AssembleStub(nint refusalTable, nint original)
    {
        var code = new List<byte>(64);
        void Bytes(params byte[] bytes) => code.AddRange(bytes);
        void Int32(int value) => code.AddRange(BitConverter.GetBytes(value));
        void Int64(long value) => code.AddRange(BitConverter.GetBytes(value));

        const int Scan = 17, Miss = 33, Hit = 39, OriginalCell = 53;
        Bytes(0x49, 0xBA); Int64(refusalTable);                                   //  0: mov r10, table
        Bytes(0x4C, 0x8B, 0x5A, checked((byte)RuntimeLayout.MethodInfoFtnOffset)); // 10: mov r11, [rdx+ftn]
        Bytes(0x49, 0x8B, 0x02);                                                  // 14: mov rax, [r10]      (count)
        Debug.Assert(code.Count == Scan, "scan label");
        Bytes(0x48, 0x85, 0xC0);                                                  // 17: test rax, rax
        Bytes(0x74, Miss - 22);                                                   // 20: jz miss
        Bytes(0x4D, 0x3B, 0x1C, 0xC2);                                            // 22: cmp r11, [r10+rax*8]
        Bytes(0x74, Hit - 28);                                                    // 26: je hit
        Bytes(0x48, 0xFF, 0xC8);                                                  // 28: dec rax
        Bytes(0xEB, unchecked((byte)(Scan - 33)));                                // 31: jmp scan
        Debug.Assert(code.Count == Miss, "miss label");
        Bytes(0xFF, 0x25); Int32(OriginalCell - 39);                              // 33: jmp [rip+cell]      (tail jump to the original compileMethod)
        Debug.Assert(code.Count == Hit, "hit label");
        Bytes(0xF0, 0x49, 0xFF, 0x82); Int32(RefusalCounterOffset);               // 39: lock inc qword [r10+counter]
        Bytes(0xB8); Int32(unchecked((int)RuntimeLayout.CorJitBadCode));          // 47: mov eax, CORJIT_BADCODE
        Bytes(0xC3);                                                              // 52: ret
        Debug.Assert(code.Count == OriginalCell, "original cell");
        Int64(original);                                                          // 53: dq original
        return code.ToArray();
    }

    [Conditional("DEBUG")]
    private static void AssertInvariants()
    {
        Debug.Assert(
            Volatile.Read(ref *(long*)table) == Members.Count,
            "The JIT guard table's published count must equal the number of guarded methods.");
        Debug.Assert(originalCompileMethod != 0, "The original compileMethod must be known once the guard is installed.");
    }
}
