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
    internal sealed class Prologue(nint body, DecodedInstruction[] instructions, byte[] bytes)
    {
        public nint Body { get; } = body;

        /// <summary>Each is <see cref="InstructionKind.Next"/> or <see cref="InstructionKind.ConditionalBranch"/>, or
        /// <see cref="InstructionKind.Unknown"/> for one only Iced can relocate.</summary>
        public DecodedInstruction[] Instructions { get; } = instructions;

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
    /// <remarks>
    /// The engine's own decoder (<see cref="X64Decoder"/>) reads the usual prologue; anything else (a call, a
    /// return, an instruction it leaves to Iced) is decoded again by Iced, which accepts or refuses it with a
    /// message naming the instruction.
    /// </remarks>
    public static unsafe Prologue Analyze(nint body, string methodName, nint methodDesc = 0)
    {
        DecodedInstruction[] instructions = DecodeQuickly(body, methodName) ?? DecodeWithIced(body, methodName);
        int length = 0;
        foreach (DecodedInstruction instruction in instructions)
        {
            length += instruction.Length;
        }

        CheckNoBranchIntoPrologue(body, length, methodName, methodDesc);
        return new Prologue(body, instructions, new ReadOnlySpan<byte>((void*)body, length).ToArray());
    }

    /// <summary>
    /// The covered instructions when <see cref="X64Decoder"/> knows them all, or null when one needs Iced; refuses
    /// what cannot be relocated.
    /// </summary>
    private static unsafe DecodedInstruction[]? DecodeQuickly(nint body, string methodName)
    {
        Span<DecodedInstruction> found = stackalloc DecodedInstruction[RuntimeLayout.JumpSize];
        int count = 0, length = 0;
        while (length < RuntimeLayout.JumpSize)
        {
            byte* at = (byte*)body + length;
            DecodedInstruction instruction = X64Decoder.Decode(at, MaxTrampolineBytes - length, body + length);
            switch (instruction.Kind)
            {
                case InstructionKind.Unknown:
                    return null;
                case InstructionKind.Next:
                    break;
                case InstructionKind.ConditionalBranch when TargetsOverwrittenBytes(instruction.BranchTarget, body):
                    throw BranchIntoOverwrittenBytes(methodName);
                case InstructionKind.ConditionalBranch:
                    break;
                case InstructionKind.Call:
                    throw CallInPrologue(methodName, Describe(X64Decoder.Mnemonic(at, instruction), at, instruction.Length));
                default:
                    throw BodyTooSmall(methodName, Describe(X64Decoder.Mnemonic(at, instruction), at, instruction.Length), length);
            }

            found[count++] = instruction;
            length += instruction.Length;
        }

        return found[..count].ToArray();
    }

    private static unsafe DecodedInstruction[] DecodeWithIced(nint body, string methodName)
    {
        var reader = new UnsafeCodeReader((byte*)body, MaxTrampolineBytes);
        var decoder = Decoder.Create(64, reader, (ulong)body, DecoderOptions.None);
        var instructions = new List<DecodedInstruction>();
        int length = 0;
        while (length < RuntimeLayout.JumpSize)
        {
            decoder.Decode(out Instruction instruction);
            CheckRelocatable(instruction, body, length, methodName);
            ConstantOffsets offsets = decoder.GetConstantOffsets(instruction);
            bool conditional = instruction.FlowControl == FlowControl.ConditionalBranch;
            bool ripRelative = instruction.IsIPRelativeMemoryOperand && offsets.DisplacementSize == 4;

            // Relocatable by copying: plain instructions (RIP-relative ones re-based) and Jcc; the rest only by Iced's encoder.
            InstructionKind kind = conditional ? InstructionKind.ConditionalBranch
                : instruction.IsIPRelativeMemoryOperand && !ripRelative ? InstructionKind.Unknown
                : InstructionKind.Next;
            instructions.Add(new DecodedInstruction(instruction.Length, kind, conditional ? (long)instruction.NearBranchTarget : 0,
                ripRelative ? offsets.DisplacementOffset : -1));
            length += instruction.Length;
        }

        return instructions.ToArray();
    }

    /// <summary>A branch into the bytes the jump overwrites (or just past them, where a relocated copy would not
    /// reach) cannot be relocated.</summary>
    private static bool TargetsOverwrittenBytes(long target, nint body) =>
        (ulong)target > (ulong)body && (ulong)target < (ulong)body + RuntimeLayout.JumpSize + 15;

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
        foreach (DecodedInstruction instruction in prologue.Instructions)
        {
            ReadOnlySpan<byte> bytes = prologue.Bytes.AsSpan(at, instruction.Length);
            long end = (long)address + code.Count + instruction.Length; // where this instruction ends in the trampoline
            if (instruction.Kind == InstructionKind.ConditionalBranch)
            {
                // Jcc rel8 is 7x cb, Jcc rel32 is 0F 8x cd (x: the condition). Prefixed forms and other
                // conditional branches (jrcxz, loop) are left to the encoder.
                int condition = bytes.Length == 2 && (bytes[0] & 0xF0) == 0x70 ? bytes[0] & 0x0F
                    : bytes.Length == 6 && bytes[0] == 0x0F && (bytes[1] & 0xF0) == 0x80 ? bytes[1] & 0x0F
                    : -1;
                long distance = instruction.BranchTarget - ((long)address + code.Count + 6);
                if (condition < 0 || distance is < int.MinValue or > int.MaxValue)
                {
                    return null;
                }

                code.Add(0x0F);
                code.Add((byte)(0x80 | condition));
                code.AddRange(BitConverter.GetBytes((int)distance));
            }
            else if (instruction is { Kind: InstructionKind.Next, IsRipRelative: true })
            {
                // disp32 is relative to the end of the instruction, in the body and in the trampoline.
                long target = (long)prologue.Body + at + instruction.Length + BitConverter.ToInt32(bytes.Slice(instruction.RipDisplacementOffset, 4));
                long displacement = target - end;
                if (displacement is < int.MinValue or > int.MaxValue)
                {
                    return null;
                }

                int start = code.Count;
                code.AddRange(bytes);
                BitConverter.TryWriteBytes(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(code).Slice(start + instruction.RipDisplacementOffset, 4), (int)displacement);
            }
            else if (instruction.Kind == InstructionKind.Next)
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
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(prologue.Bytes), (ulong)prologue.Body, DecoderOptions.None);
        var block = new List<Instruction>();
        while (decoder.IP < (ulong)(prologue.Body + prologue.Length))
        {
            decoder.Decode(out Instruction instruction);
            block.Add(instruction);
        }

        block.Add(Instruction.CreateBranch(Code.Jmp_rel32_64, (ulong)(prologue.Body + prologue.Length)));

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

    private static unsafe void CheckRelocatable(in Instruction instruction, nint body, int offset, string methodName)
    {
        byte* at = (byte*)body + offset;
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
                if (TargetsOverwrittenBytes((long)instruction.NearBranchTarget, body))
                {
                    throw BranchIntoOverwrittenBytes(methodName);
                }

                break;
            case FlowControl.Return:
            case FlowControl.UnconditionalBranch:
            case FlowControl.IndirectBranch:
            case FlowControl.Interrupt:
            case FlowControl.Exception:
                throw BodyTooSmall(methodName, Describe(instruction.Mnemonic.ToString().ToLowerInvariant(), at, instruction.Length), offset);
            case FlowControl.Call:
            case FlowControl.IndirectCall:
                throw CallInPrologue(methodName, Describe(instruction.Mnemonic.ToString().ToLowerInvariant(), at, instruction.Length));
            default:
                throw new NotSupportedException(
                    $"Cannot detour {methodName}: the instruction '{Describe(instruction.Mnemonic.ToString().ToLowerInvariant(), at, instruction.Length)}' " +
                    $"at body offset {offset} cannot be relocated.");
        }
    }

    private static NotSupportedException BranchIntoOverwrittenBytes(string methodName) => new(
        $"Cannot detour {methodName}: a branch in its first bytes targets the bytes the jump would overwrite.");

    private static NotSupportedException BodyTooSmall(string methodName, string instruction, int offset) => new(
        $"Cannot detour {methodName}: its body is too small for a {RuntimeLayout.JumpSize}-byte jump " +
        $"(it ends with '{instruction}' at offset {offset}). Detour a larger method that calls it.");

    private static NotSupportedException CallInPrologue(string methodName, string instruction) => new(
        $"Cannot detour {methodName}: the first {RuntimeLayout.JumpSize} bytes of its body contain a call " +
        $"('{instruction}'); relocating it would put a return address the runtime cannot unwind on the stack.");

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

        // The engine's decoder reads what it knows; from the first instruction it leaves to Iced on, Iced reads the rest.
        int offset = 0;
        while (offset < limit)
        {
            DecodedInstruction instruction = X64Decoder.Decode((byte*)body + offset, limit - offset, body + offset);
            if (instruction.Kind == InstructionKind.Unknown)
            {
                ScanWithIced(body, offset, limit, length, bodySize is null, methodName);
                return;
            }

            if (bodySize is null && IsPadding((byte*)body + offset, instruction.Length))
            {
                return;
            }

            if (instruction.Kind is InstructionKind.ConditionalBranch or InstructionKind.UnconditionalBranch)
            {
                CheckBranch(body, length, instruction.BranchTarget, body + offset, methodName);
            }

            offset += instruction.Length;
        }
    }

    private static unsafe void ScanWithIced(nint body, int offset, int limit, int length, bool stopAtPadding, string methodName)
    {
        var decoder = Decoder.Create(64, new UnsafeCodeReader((byte*)body + offset, limit - offset), (ulong)(body + offset), DecoderOptions.None);
        ulong end = (ulong)body + (ulong)limit;
        while (decoder.IP < end)
        {
            ulong at = decoder.IP;
            decoder.Decode(out Instruction instruction);
            if (instruction.IsInvalid || (stopAtPadding && (instruction.Code == Code.Int3 || IsPadding((byte*)at, instruction.Length))))
            {
                return;
            }

            if (instruction.FlowControl is FlowControl.ConditionalBranch or FlowControl.UnconditionalBranch
                && instruction.Op0Kind is OpKind.NearBranch64)
            {
                CheckBranch(body, length, (long)instruction.NearBranchTarget, (nint)at, methodName);
            }
        }
    }

    /// <summary>int3, or <c>00 00</c> (<c>add [rax], al</c>, which the JIT never emits and which is what the gap
    /// before the next method's code header decodes as).</summary>
    private static unsafe bool IsPadding(byte* at, int length) => (length == 1 && *at == 0xCC) || (length == 2 && *(ushort*)at == 0);

    private static void CheckBranch(nint body, int length, long target, nint from, string methodName)
    {
        if ((ulong)target > (ulong)body && (ulong)target < (ulong)body + (ulong)length)
        {
            throw new NotSupportedException(
                $"Cannot detour {methodName}: its code branches back into its first {length} bytes " +
                $"(from 0x{from:x}), which the jump would overwrite.");
        }
    }

    /// <summary>
    /// The instruction for a message: its mnemonic and bytes ("call, E8 1B 2C 00 00"). Iced's formatter would
    /// print operands, but its first use costs ~70 JIT compiles, paid by every process with a refused method.
    /// </summary>
    private static unsafe string Describe(string mnemonic, byte* at, int length) =>
        $"{mnemonic}, {BitConverter.ToString(new ReadOnlySpan<byte>(at, length).ToArray()).Replace('-', ' ')}";

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
