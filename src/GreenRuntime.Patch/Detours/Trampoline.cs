using System.Diagnostics;
using Iced.Intel;

namespace GreenRuntime.Detours;

/// <summary>
/// Builds the code that runs a method's original body after its first bytes were overwritten: the
/// overwritten instructions, relocated to near memory, followed by a jump back into the body.
/// </summary>
/// <remarks>
/// <para>
/// Only instructions whose effect does not depend on where they execute, apart from RIP-relative operands
/// and conditional branches, are relocated: they are copied byte for byte, with RIP-relative displacements
/// re-based and conditional jumps widened to rel32 (anything else position-dependent goes to Iced's
/// BlockEncoder). A
/// <c>call</c> is never relocated: it would push a return address inside the trampoline, which the runtime's
/// unwinder does not know, and a GC stack walk or an exception passing through that frame would fail.
/// Anything the decoder does not understand is refused with a message that names the instruction.
/// </para>
/// <para>
/// The relocated instructions are prologue instructions. A thread running them is not at a GC safe point
/// (prologues are never interruptible), so the runtime never needs to unwind from inside the trampoline;
/// once it jumps back, the body's own unwind information describes the state exactly, because the same
/// instructions have run.
/// </para>
/// </remarks>
internal static class Trampoline
{
    private const int MaxTrampolineBytes = 64;
    private const int BackwardScanBytes = 4096;

    /// <summary>The instructions a jump of <see cref="RuntimeLayout.JumpSize"/> bytes at a body would overwrite.</summary>
    internal sealed class Prologue(nint body, List<Instruction> instructions, List<ConstantOffsets> offsets, byte[] bytes)
    {
        public nint Body { get; } = body;
        public List<Instruction> Instructions { get; } = instructions;

        /// <summary>Where each instruction's displacement and immediates are, in the decoder's words.</summary>
        public List<ConstantOffsets> Offsets { get; } = offsets;

        /// <summary>The covered bytes as they were when decoded (at least the jump size).</summary>
        public byte[] Bytes { get; } = bytes;

        /// <summary>Bytes covered by <see cref="Instructions"/> (at least the jump size).</summary>
        public int Length => Bytes.Length;

    }

    /// <summary>
    /// Decodes the start of a body and checks that the jump can be written over it and that the covered
    /// instructions can be relocated. Throws <see cref="NotSupportedException"/> naming the reason if not.
    /// </summary>
    /// <param name="body">The body's first byte.</param>
    /// <param name="methodName">For messages.</param>
    /// <param name="methodDesc">The method's MethodDesc, to read the body's length from its code header (0: unknown).</param>
    public static unsafe Prologue Analyze(nint body, string methodName, nint methodDesc = 0)
    {
        var reader = new UnsafeCodeReader((byte*)body, 64);
        var decoder = Decoder.Create(64, reader, (ulong)body, DecoderOptions.None);
        var instructions = new List<Instruction>();
        var offsets = new List<ConstantOffsets>();
        int length = 0;
        while (length < RuntimeLayout.JumpSize)
        {
            decoder.Decode(out Instruction instruction);
            CheckRelocatable(instruction, body, length, methodName);
            instructions.Add(instruction);
            offsets.Add(decoder.GetConstantOffsets(instruction));
            length += instruction.Length;
        }

        CheckNoBranchIntoPrologue(body, length, methodName, methodDesc);
        return new Prologue(body, instructions, offsets, new ReadOnlySpan<byte>((void*)body, length).ToArray());
    }

    /// <summary>Trampolines by body: a body restored by Dispose has exactly its old bytes, so its trampoline is reused.</summary>
    private static readonly Dictionary<nint, nint> TrampolinesByBody = new();

    /// <summary>Near jump stubs by destination (a few per replacement at most).</summary>
    private static readonly Dictionary<nint, List<nint>> StubsByTarget = new();

    /// <summary>
    /// Returns the trampoline for the body (assembling it in near memory the first time). Caller holds the
    /// engine lock. Reuse matters: near memory is scarce and never freed, and a detour may be created and
    /// disposed thousands of times.
    /// </summary>
    public static nint Build(Prologue prologue)
    {
        if (TrampolinesByBody.TryGetValue(prologue.Body, out nint existing))
        {
            return existing;
        }

        nint address = NearAllocator.Allocate(prologue.Body, MaxTrampolineBytes);
        byte[] code = Copy(prologue, address) ?? Reencode(prologue, address);
        if (code.Length > MaxTrampolineBytes)
        {
            throw new InvalidOperationException(
                $"Internal error: the relocated prologue needs {code.Length} bytes; at most {MaxTrampolineBytes} were reserved.");
        }

        CodeMemory.WriteCode(address, code);
        TrampolinesByBody.Add(prologue.Body, address);
        return address;
    }

    /// <summary>
    /// The usual case: the covered instructions byte for byte, except that a RIP-relative displacement is
    /// re-based to the new address and a conditional jump (<c>Jcc rel8</c> or <c>rel32</c>) becomes
    /// <c>Jcc rel32</c> to its old target; then <c>E9 rel32</c> back to the first byte after them. Returns
    /// null for anything else position-dependent, or a distance that does not fit in 32 bits. Iced's encoder
    /// would produce equivalent bytes, but its first use costs tens of milliseconds of JIT and table set-up,
    /// which most processes then never need.
    /// </summary>
    private static byte[]? Copy(Prologue prologue, nint address)
    {
        var code = new List<byte>(MaxTrampolineBytes);
        int at = 0; // offset in the prologue
        for (int i = 0; i < prologue.Instructions.Count; i++)
        {
            Instruction instruction = prologue.Instructions[i];
            ReadOnlySpan<byte> bytes = prologue.Bytes.AsSpan(at, instruction.Length);
            long end = (long)address + code.Count + instruction.Length; // where this instruction ends in the trampoline
            if (instruction.FlowControl == FlowControl.ConditionalBranch)
            {
                // Jcc rel8 is 7x cb, Jcc rel32 is 0F 8x cd (x: the condition). Prefixed forms and other
                // conditional branches (jrcxz, loop) are left to the encoder.
                int condition = bytes.Length == 2 && (bytes[0] & 0xF0) == 0x70 ? bytes[0] & 0x0F
                    : bytes.Length == 6 && bytes[0] == 0x0F && (bytes[1] & 0xF0) == 0x80 ? bytes[1] & 0x0F
                    : -1;
                long distance = (long)instruction.NearBranchTarget - ((long)address + code.Count + 6);
                if (condition < 0 || distance is < int.MinValue or > int.MaxValue)
                {
                    return null;
                }

                code.Add(0x0F);
                code.Add((byte)(0x80 | condition));
                code.AddRange(BitConverter.GetBytes((int)distance));
            }
            else if (instruction.IsIPRelativeMemoryOperand)
            {
                // disp32 is relative to the end of the instruction.
                ConstantOffsets offsets = prologue.Offsets[i];
                long displacement = (long)instruction.IPRelativeMemoryAddress - end;
                if (offsets.DisplacementSize != 4 || displacement is < int.MinValue or > int.MaxValue)
                {
                    return null;
                }

                int start = code.Count;
                code.AddRange(bytes);
                BitConverter.TryWriteBytes(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(code).Slice(start + offsets.DisplacementOffset, 4), (int)displacement);
            }
            else if (instruction.FlowControl == FlowControl.Next)
            {
                code.AddRange(bytes);
            }
            else
            {
                return null;
            }

            at += instruction.Length;
        }

        long back = (long)prologue.Body + prologue.Length - ((long)address + code.Count + RuntimeLayout.JumpSize);
        code.Add(0xE9);
        code.AddRange(BitConverter.GetBytes(checked((int)back)));
        return code.ToArray();
    }

    /// <summary>
    /// What <see cref="Copy"/> does not handle: Iced's BlockEncoder re-encodes it for the new address, or refuses.
    /// </summary>
    private static byte[] Reencode(Prologue prologue, nint address)
    {
        var block = new List<Instruction>(prologue.Instructions)
        {
            Instruction.CreateBranch(Code.Jmp_rel32_64, (ulong)(prologue.Body + prologue.Length)),
        };

        var writer = new ByteWriter();
        if (!BlockEncoder.TryEncode(64, new InstructionBlock(writer, block, (ulong)address), out string? error, out _))
        {
            throw new NotSupportedException($"Could not relocate the prologue of the original body: {error}");
        }

        return writer.ToArray();
    }

    /// <summary>
    /// Returns an address reachable with rel32 from <paramref name="from"/> that jumps to
    /// <paramref name="target"/>: the target itself if in reach, else a near <c>jmp [rip+0]; dq target</c> stub.
    /// </summary>
    public static nint ReachableJumpTarget(nint from, nint target)
    {
        if (NearAllocator.InReach(from, target))
        {
            return target;
        }

        if (!StubsByTarget.TryGetValue(target, out List<nint>? stubs))
        {
            stubs = new List<nint>();
            StubsByTarget.Add(target, stubs);
        }

        foreach (nint existing in stubs)
        {
            if (NearAllocator.InReach(from, existing))
            {
                return existing;
            }
        }

        nint stub = NearAllocator.Allocate(from, 14);
        Span<byte> code = stackalloc byte[14];
        code[0] = 0xFF;
        code[1] = 0x25;
        BitConverter.TryWriteBytes(code.Slice(2, 4), 0);
        BitConverter.TryWriteBytes(code.Slice(6, 8), (long)target);
        CodeMemory.WriteCode(stub, code);
        stubs.Add(stub);
        return stub;
    }

    private static void CheckRelocatable(in Instruction instruction, nint body, int offset, string methodName)
    {
        if (instruction.IsInvalid)
        {
            throw new NotSupportedException(
                $"Cannot detour {methodName}: the byte at body offset {offset} does not decode as an instruction.");
        }

        switch (instruction.FlowControl)
        {
            case FlowControl.Next:
                break;
            case FlowControl.ConditionalBranch:
                ulong target = instruction.NearBranchTarget;
                if (target > (ulong)body && target < (ulong)body + RuntimeLayout.JumpSize + 15)
                {
                    throw new NotSupportedException(
                        $"Cannot detour {methodName}: a branch in its first bytes targets the bytes the jump would overwrite.");
                }

                break;
            case FlowControl.Return:
            case FlowControl.UnconditionalBranch:
            case FlowControl.IndirectBranch:
            case FlowControl.Interrupt:
            case FlowControl.Exception:
                throw new NotSupportedException(
                    $"Cannot detour {methodName}: its body is too small for a {RuntimeLayout.JumpSize}-byte jump " +
                    $"(it ends with '{Describe(instruction, body + offset)}' at offset {offset}). Detour a larger method that calls it.");
            case FlowControl.Call:
            case FlowControl.IndirectCall:
                throw new NotSupportedException(
                    $"Cannot detour {methodName}: the first {RuntimeLayout.JumpSize} bytes of its body contain a call " +
                    $"('{Describe(instruction, body + offset)}'); relocating it would put a return address the runtime cannot unwind on the stack.");
            default:
                throw new NotSupportedException(
                    $"Cannot detour {methodName}: the instruction '{Describe(instruction, body + offset)}' at body offset {offset} cannot be relocated.");
        }
    }

    /// <summary>
    /// Scans the rest of the body for a branch back into the overwritten bytes (possible when the prologue is
    /// shorter than the jump, e.g. a recursive tail call turned into a loop).
    /// </summary>
    /// <remarks>
    /// The body's length comes from its code header when it is JIT-compiled (<see cref="CodeHeader"/>): the scan
    /// covers exactly the body, no more (funclets after it and the next method's header are never decoded as its
    /// code). ReadyToRun code has no such header (reading its length from the image's runtime-function table by
    /// dereferencing image pointers crashed the process now and then: a fault there is not catchable), so for it,
    /// and whenever the header does not answer, the scan is best effort: it stops at padding (int3, or two zero bytes —
    /// <c>add [rax], al</c>, which the JIT never emits and which is what the gap before the next method's code
    /// header decodes as), an undecodable byte, or after 4 KB. Without those stops the scan walked into the next
    /// method's header pointer, decoded its bytes as instructions and, now and then, found a "branch" into the
    /// prologue.
    /// </remarks>
    private static unsafe void CheckNoBranchIntoPrologue(nint body, int length, string methodName, nint methodDesc)
    {
        int? bodySize = methodDesc == 0 ? null : CodeHeader.TryReadBodySize(body, methodDesc);
        CodeMemory.Region? region = CodeMemory.FindRegion(body);
        int limit = bodySize ?? (region is { } r ? (int)Math.Min(BackwardScanBytes, (long)(r.End - (ulong)body)) : length);

        var decoder = Decoder.Create(64, new UnsafeCodeReader((byte*)body, limit), (ulong)body, DecoderOptions.None);
        ulong end = (ulong)body + (ulong)limit;
        while (decoder.IP < end)
        {
            ulong at = decoder.IP;
            decoder.Decode(out Instruction instruction);
            if (instruction.IsInvalid || (bodySize is null && (instruction.Code == Code.Int3 || (instruction.Length == 2 && *(ushort*)at == 0))))
            {
                return;
            }

            if (instruction.FlowControl is FlowControl.ConditionalBranch or FlowControl.UnconditionalBranch
                && instruction.Op0Kind is OpKind.NearBranch64)
            {
                ulong target = instruction.NearBranchTarget;
                if (target > (ulong)body && target < (ulong)body + (ulong)length)
                {
                    throw new NotSupportedException(
                        $"Cannot detour {methodName}: its code branches back into its first {length} bytes " +
                        $"(from 0x{instruction.IP:x}), which the jump would overwrite.");
                }
            }
        }
    }

    /// <summary>
    /// The instruction for a message: its mnemonic and bytes ("call, E8 1B 2C 00 00"). Iced's formatter would
    /// print operands, but its first use costs ~70 JIT compiles, paid by every process with a refused method.
    /// </summary>
    private static unsafe string Describe(in Instruction instruction, nint at) =>
        $"{instruction.Mnemonic.ToString().ToLowerInvariant()}, {BitConverter.ToString(new ReadOnlySpan<byte>((void*)at, instruction.Length).ToArray()).Replace('-', ' ')}";

    /// <summary>Reads code bytes straight from memory, never past <c>limit</c>.</summary>
    private sealed unsafe class UnsafeCodeReader(byte* start, int limit) : CodeReader
    {
        private int position;

        public override int ReadByte() => position < limit ? start[position++] : -1;
    }

    private sealed class ByteWriter : CodeWriter
    {
        private readonly List<byte> bytes = new();

        public override void WriteByte(byte value) => bytes.Add(value);

        public byte[] ToArray() => bytes.ToArray();
    }

    [Conditional("DEBUG")]
    internal static void AssertCovers(Prologue prologue) =>
        Debug.Assert(prologue.Length >= RuntimeLayout.JumpSize, "A prologue must cover every byte the jump overwrites.");
}
