namespace GreenRuntime.Detours;

/// <summary>What the engine needs to know of one instruction.</summary>
internal enum InstructionKind : byte
{
    /// <summary>Not decoded here: ask Iced (an encoding the JIT does not emit, or one whose rules are not worth writing down).</summary>
    Unknown,

    /// <summary>Falls through to the next instruction.</summary>
    Next,

    /// <summary><c>Jcc rel8</c> or <c>Jcc rel32</c>, without prefixes.</summary>
    ConditionalBranch,

    /// <summary><c>jmp rel8</c> or <c>jmp rel32</c>, without prefixes.</summary>
    UnconditionalBranch,

    /// <summary>A near call, direct or indirect.</summary>
    Call,

    /// <summary><c>ret</c>, <c>int3</c>, <c>int n</c> or an indirect near jump: the code does not go on after it.</summary>
    Exit,
}

/// <summary>One decoded instruction.</summary>
/// <param name="Length">Its length in bytes (0 when <see cref="Kind"/> is <see cref="InstructionKind.Unknown"/>).</param>
/// <param name="Kind">Its control flow.</param>
/// <param name="BranchTarget">For a relative branch, where it goes.</param>
/// <param name="RipDisplacementOffset">For a RIP-relative memory operand, the offset of its 32-bit displacement in
/// the instruction; -1 otherwise.</param>
internal readonly record struct DecodedInstruction(int Length, InstructionKind Kind, long BranchTarget, int RipDisplacementOffset)
{
    public bool IsRipRelative => RipDisplacementOffset >= 0;

    public static DecodedInstruction Unknown => default;
}

/// <summary>
/// A small x64 instruction decoder for the code the JIT and crossgen emit: lengths, relative branches and
/// RIP-relative operands, nothing more.
/// </summary>
/// <remarks>
/// <para>
/// Why it exists: the engine reads every detoured body's first bytes and scans the body for branches back into
/// them. Iced does that perfectly, but its decoder sets up tables for every x86 encoding the first time it is
/// created, which costs about 500 JIT compilations (~15 ms of CPU) — a seventh of <c>Patch.All()</c>. This decoder
/// answers the common case; anything it does not recognise is <see cref="InstructionKind.Unknown"/>, and the
/// caller hands that instruction and everything after it to Iced, so Iced stays the authority.
/// </para>
/// <para>
/// The rule it must keep, checked by a test that runs it side by side with Iced over real JIT and ReadyToRun
/// code and over random bytes: <b>whenever Iced decodes a valid instruction, this decoder either answers
/// Unknown or gives the same length, the same kind, the same branch target and the same RIP-relative
/// displacement.</b> On bytes Iced rejects it may still answer (it does not check every opcode's validity, only
/// its shape); callers only ever decode code, and for a scan past the end of real code answering more only
/// means looking further, never less.
/// </para>
/// <para>
/// The shape of an instruction: legacy prefixes, an optional REX byte, then either a VEX (<c>C4</c>/<c>C5</c>) or
/// EVEX (<c>62</c>) prefix with its opcode, or a legacy opcode in one of the maps <c>xx</c>, <c>0F xx</c>,
/// <c>0F 38 xx</c>, <c>0F 3A xx</c>; then a ModRM byte (with SIB and displacement) where the opcode has one, and an
/// immediate whose size the opcode (and the <c>66</c> prefix or REX.W) decides.
/// </para>
/// </remarks>
internal static unsafe class X64Decoder
{
    private const int MaxLength = 15;

    /// <summary>How the immediate of an opcode is sized.</summary>
    private enum Immediate : byte
    {
        None,
        Byte,

        /// <summary>Two bytes with a <c>66</c> prefix, four without ("z" in the manuals).</summary>
        WordOrDword,
    }

    /// <summary>Decodes the instruction at <paramref name="code"/>, reading at most <paramref name="available"/> bytes;
    /// <paramref name="ip"/> is its address (for branch targets).</summary>
    public static DecodedInstruction Decode(byte* code, int available, long ip)
    {
        int limit = Math.Min(available, MaxLength);
        int at = 0;
        bool operandSize = false, addressSize = false, anyPrefix = false, repz = false;
        byte rex = 0;

        // Legacy prefixes, in any order; a REX byte counts only right before the opcode.
        while (true)
        {
            if (at >= limit)
            {
                return DecodedInstruction.Unknown;
            }

            byte b = code[at];
            if (b is 0x26 or 0x2E or 0x36 or 0x3E or 0x64 or 0x65 or 0xF0 or 0xF2 or 0xF3 or 0x66 or 0x67)
            {
                operandSize |= b == 0x66;
                addressSize |= b == 0x67;
                repz |= b == 0xF3;
                anyPrefix = true;
                rex = 0;
                at++;
            }
            else if ((b & 0xF0) == 0x40)
            {
                rex = b;
                anyPrefix = true;
                at++;
            }
            else
            {
                break;
            }
        }

        byte op = code[at++];
        return op switch
        {
            0x0F => DecodeTwoByte(code, limit, at, ip, operandSize, addressSize, anyPrefix, repz),
            0xC4 or 0xC5 or 0x62 when !anyPrefix => DecodeVector(code, limit, at - 1, addressSize),
            // REX.W makes the operand 64-bit whatever 66 says: "z" immediates are then 4 bytes again.
            _ => DecodeOneByte(code, limit, at, ip, op, operandSize && (rex & 0x08) == 0, addressSize, anyPrefix, rex),
        };
    }

    private static DecodedInstruction DecodeOneByte(byte* code, int limit, int at, long ip, byte op, bool operandSize, bool addressSize, bool anyPrefix, byte rex)
    {
        int z = operandSize ? 2 : 4;
        switch (op)
        {
            // ALU ops: r/m forms, then AL/eAX with an immediate; the other columns are prefixes or invalid.
            case < 0x40 when (op & 7) < 4:
                return WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
            case < 0x40 when (op & 7) == 4:
                return Plain(limit, at + 1);
            case < 0x40 when (op & 7) == 5:
                return Plain(limit, at + z);
            case >= 0x50 and <= 0x5F: // push/pop r64
            case >= 0x90 and <= 0x99: // nop, xchg with rax, cbw/cwd family
            case >= 0x9B and <= 0x9F: // fwait, pushf/popf, sahf/lahf
            case >= 0xA4 and <= 0xA7: // string ops
            case >= 0xAA and <= 0xAF:
            case >= 0x6C and <= 0x6F:
            case 0xC9: // leave
            case 0xD7: // xlat
            case >= 0xEC and <= 0xEF: // in/out with dx
            case 0xF5 or >= 0xF8 and <= 0xFD: // cmc, clc/stc, cli/sti, cld/std
                return Plain(limit, at);
            case 0x63: // movsxd
            case >= 0x84 and <= 0x8E:
            case >= 0xD0 and <= 0xD3: // shifts by 1 or cl
            case >= 0xD8 and <= 0xDF: // x87
                return WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
            case 0x68:
                return Plain(limit, at + z);
            case 0x69:
                return WithModRM(code, limit, at, Immediate.WordOrDword, operandSize, addressSize);
            case 0x6A:
                return Plain(limit, at + 1);
            case 0x6B:
            case 0x80 or 0x83:
            case 0xC0 or 0xC1:
                return WithModRM(code, limit, at, Immediate.Byte, operandSize, addressSize);
            case 0x81:
                return WithModRM(code, limit, at, Immediate.WordOrDword, operandSize, addressSize);
            case 0x8F when at < limit && (code[at] & 0x38) == 0: // pop r/m (other reg fields are XOP)
                return WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
            case >= 0xA0 and <= 0xA3: // mov with a 64-bit (or, with 67, 32-bit) absolute address
                return Plain(limit, at + (addressSize ? 4 : 8));
            case 0xA8 or (>= 0xB0 and <= 0xB7) or (>= 0xE4 and <= 0xE7):
                return Plain(limit, at + 1);
            case 0xA9:
                return Plain(limit, at + z);
            case >= 0xB8 and <= 0xBF: // mov r, imm: the only 8-byte immediate
                return Plain(limit, at + ((rex & 0x08) != 0 ? 8 : z));
            case 0xC6 when at < limit && (code[at] & 0x38) == 0:
                return WithModRM(code, limit, at, Immediate.Byte, operandSize, addressSize);
            case 0xC7 when at < limit && (code[at] & 0x38) == 0:
                return WithModRM(code, limit, at, Immediate.WordOrDword, operandSize, addressSize);
            case 0xC8: // enter imm16, imm8
                return Plain(limit, at + 3);
            case 0xF6 or 0xF7 when at < limit:
                // Group 3: test (reg 0 and 1) has an immediate, not/neg/mul/imul/div/idiv do not.
                Immediate immediate = (code[at] & 0x30) != 0 ? Immediate.None : op == 0xF6 ? Immediate.Byte : Immediate.WordOrDword;
                return WithModRM(code, limit, at, immediate, operandSize, addressSize);
            case 0xFE when at < limit && (code[at] & 0x38) <= 0x08: // inc/dec r/m8
                return WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
            case 0xFF when at < limit:
                return DecodeGroup5(code, limit, at, operandSize, addressSize);

            // Control flow. A prefixed branch (a hint, 66, bnd) is left to Iced.
            case >= 0x70 and <= 0x7F when !anyPrefix:
                return Branch(code, limit, at, ip, 1, InstructionKind.ConditionalBranch);
            case 0xEB when !anyPrefix:
                return Branch(code, limit, at, ip, 1, InstructionKind.UnconditionalBranch);
            case 0xE9 when !anyPrefix:
                return Branch(code, limit, at, ip, 4, InstructionKind.UnconditionalBranch);
            case 0xE8 when !anyPrefix:
                return Fixed(limit, at + 4, InstructionKind.Call);
            case 0xC3 when !anyPrefix:
            case 0xCC when !anyPrefix:
                return Fixed(limit, at, InstructionKind.Exit);
            case 0xC2 when !anyPrefix:
                return Fixed(limit, at + 2, InstructionKind.Exit);
            case 0xCD when !anyPrefix:
                return Fixed(limit, at + 1, InstructionKind.Exit);
            default:
                return DecodedInstruction.Unknown;
        }
    }

    /// <summary><c>FF</c>: inc, dec and push are plain; near call and jmp through r/m are control flow;
    /// far forms and reg 7 are left to Iced.</summary>
    private static DecodedInstruction DecodeGroup5(byte* code, int limit, int at, bool operandSize, bool addressSize)
    {
        int reg = (code[at] >> 3) & 7;
        DecodedInstruction instruction = reg is 3 or 5 or 7 ? DecodedInstruction.Unknown : WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
        return instruction.Kind != InstructionKind.Next ? instruction
            : reg == 2 ? instruction with { Kind = InstructionKind.Call }
            : reg == 4 ? instruction with { Kind = InstructionKind.Exit }
            : instruction;
    }

    /// <summary>The <c>0F</c> map (and through it <c>0F 38</c> and <c>0F 3A</c>).</summary>
    private static DecodedInstruction DecodeTwoByte(byte* code, int limit, int at, long ip, bool operandSize, bool addressSize, bool anyPrefix, bool repz)
    {
        if (at >= limit)
        {
            return DecodedInstruction.Unknown;
        }

        byte op = code[at++];
        switch (op)
        {
            case 0x38 when at < limit && IsKnownMap38(code[at]):
                return WithModRM(code, limit, at + 1, Immediate.None, operandSize, addressSize);
            case 0x3A when at < limit && IsKnownMap3A(code[at]):
                return WithModRM(code, limit, at + 1, Immediate.Byte, operandSize, addressSize);
            case 0x00 when at < limit && (code[at] & 0x38) < 0x30: // sldt ... verw
            case 0x01 when at < limit && (code[at] & 0xC0) != 0xC0 && (code[at] & 0x38) != 0x28: // memory forms of group 7
            case 0x02 or 0x03: // lar, lsl
            case 0x0D: // prefetch
            case >= 0x10 and <= 0x17:
            case >= 0x18 and <= 0x1F: // hint nops, endbr64
            case >= 0x28 and <= 0x2F:
            case >= 0x40 and <= 0x6F: // cmovcc, SSE
            case >= 0x74 and <= 0x76:
            case >= 0x7C and <= 0x7F:
            case >= 0x90 and <= 0x9F: // setcc
            case 0xA3 or 0xA5 or 0xAB or 0xAD or 0xAE or 0xAF:
            case >= 0xB0 and <= 0xB7:
            case >= 0xBB and <= 0xBF:
            case 0xB8 when repz: // popcnt (without F3 it is jmpe)
            case 0xC0 or 0xC1 or 0xC3 or 0xC7:
            case >= 0xD0 and <= 0xFE:
                return WithModRM(code, limit, at, Immediate.None, operandSize, addressSize);
            case >= 0x70 and <= 0x73: // pshufd, shifts by an immediate
            case 0xA4 or 0xAC: // shld, shrd with an immediate
            case 0xBA: // bt family with an immediate
            case 0xC2 or 0xC4 or 0xC5 or 0xC6:
                return WithModRM(code, limit, at, Immediate.Byte, operandSize, addressSize);
            case >= 0x80 and <= 0x8F when !anyPrefix: // Jcc rel32
                return Branch(code, limit, at, ip, 4, InstructionKind.ConditionalBranch);
            case 0x77: // emms
            case 0xA0 or 0xA1 or 0xA8 or 0xA9: // push/pop fs, gs
            case >= 0xC8 and <= 0xCF: // bswap
                return Plain(limit, at);
            default:
                return DecodedInstruction.Unknown;
        }
    }

    /// <summary>
    /// A VEX (<c>C5</c>: map 0F; <c>C4</c>: map from its mmmmm field) or EVEX (<c>62</c>) instruction: always a
    /// ModRM byte; an imm8 in map 0F3A and for the few 0F opcodes that take one. (EVEX compresses 8-bit
    /// displacements by scaling them, which changes their meaning but not their size.)
    /// </summary>
    private static DecodedInstruction DecodeVector(byte* code, int limit, int at, bool addressSize)
    {
        byte escape = code[at];
        int prefixLength = escape switch { 0xC5 => 2, 0xC4 => 3, _ => 4 };
        if (at + prefixLength >= limit)
        {
            return DecodedInstruction.Unknown;
        }

        int map;
        if (escape == 0xC5)
        {
            map = 1;
        }
        else if (escape == 0xC4)
        {
            map = code[at + 1] & 0x1F;
        }
        else
        {
            // EVEX P0 = R X B R' 0 m m m (bit 3 zero), P1 = W vvvv 1 pp (bit 2 one).
            if ((code[at + 1] & 0x08) != 0 || (code[at + 2] & 0x04) == 0)
            {
                return DecodedInstruction.Unknown;
            }

            map = code[at + 1] & 0x07;
        }

        if (map is < 1 or > 3)
        {
            return DecodedInstruction.Unknown;
        }

        at += prefixLength;
        byte op = code[at++];
        if (map == 1 && op == 0x77)
        {
            // vzeroupper / vzeroall: the one VEX instruction without ModRM (no EVEX form).
            return escape == 0x62 ? DecodedInstruction.Unknown : Plain(limit, at);
        }

        bool immediate = map == 3 || (map == 1 && op is (>= 0x70 and <= 0x73) or 0xC2 or 0xC4 or 0xC5 or 0xC6);
        return WithModRM(code, limit, at, immediate ? Immediate.Byte : Immediate.None, operandSize: false, addressSize);
    }

    /// <summary>Legacy <c>0F 38</c> opcodes the JIT emits (SSSE3, SSE4.1/4.2, AES, SHA, movbe, crc32, adcx/adox).</summary>
    private static bool IsKnownMap38(byte op) =>
        op is <= 0x0B or 0x10 or 0x14 or 0x15 or 0x17 or (>= 0x1C and <= 0x1E) or (>= 0x20 and <= 0x25) or (>= 0x28 and <= 0x2B)
            or (>= 0x30 and <= 0x35) or (>= 0x37 and <= 0x41) or (>= 0xC8 and <= 0xCD) or (>= 0xDB and <= 0xDF) or 0xF0 or 0xF1 or 0xF6;

    /// <summary>Legacy <c>0F 3A</c> opcodes the JIT emits (SSSE3, SSE4.1/4.2, AES, pclmul, SHA).</summary>
    private static bool IsKnownMap3A(byte op) =>
        op is (>= 0x08 and <= 0x0F) or (>= 0x14 and <= 0x17) or (>= 0x20 and <= 0x22) or (>= 0x40 and <= 0x42) or 0x44
            or (>= 0x60 and <= 0x63) or 0xCC or 0xDF;

    /// <summary>
    /// The ModRM byte at <paramref name="at"/>, its SIB and displacement, then the immediate. A RIP-relative
    /// operand (mod 00, r/m 101, no SIB) records where its displacement is; with a <c>67</c> prefix it would be
    /// EIP-relative (an address truncated to 32 bits), which is left to Iced.
    /// </summary>
    private static DecodedInstruction WithModRM(byte* code, int limit, int at, Immediate immediate, bool operandSize, bool addressSize)
    {
        if (at >= limit)
        {
            return DecodedInstruction.Unknown;
        }

        byte modrm = code[at++];
        int mod = modrm >> 6, rm = modrm & 7;
        int ripDisplacement = -1;
        if (mod != 3)
        {
            if (rm == 4)
            {
                if (at >= limit)
                {
                    return DecodedInstruction.Unknown;
                }

                byte sib = code[at++];
                if (mod == 0 && (sib & 7) == 5)
                {
                    at += 4; // no base: disp32
                }
            }
            else if (mod == 0 && rm == 5)
            {
                if (addressSize)
                {
                    return DecodedInstruction.Unknown;
                }

                ripDisplacement = at;
                at += 4;
            }

            at += mod switch { 1 => 1, 2 => 4, _ => 0 };
        }

        at += immediate switch
        {
            Immediate.Byte => 1,
            Immediate.WordOrDword => operandSize ? 2 : 4,
            _ => 0,
        };
        return at <= limit ? new DecodedInstruction(at, InstructionKind.Next, 0, ripDisplacement) : DecodedInstruction.Unknown;
    }

    private static DecodedInstruction Plain(int limit, int end) => Fixed(limit, end, InstructionKind.Next);

    private static DecodedInstruction Fixed(int limit, int end, InstructionKind kind) =>
        end <= limit ? new DecodedInstruction(end, kind, 0, -1) : DecodedInstruction.Unknown;

    private static DecodedInstruction Branch(byte* code, int limit, int at, long ip, int size, InstructionKind kind)
    {
        if (at + size > limit)
        {
            return DecodedInstruction.Unknown;
        }

        long displacement = size == 1 ? (sbyte)code[at] : *(int*)(code + at);
        int length = at + size;
        return new DecodedInstruction(length, kind, ip + length + displacement, -1);
    }

    /// <summary>The mnemonic of a control-flow instruction this decoder knows, for messages ("call", "ret", "je" is "jcc").</summary>
    public static string Mnemonic(byte* code, DecodedInstruction instruction)
    {
        int at = 0;
        while ((code[at] & 0xF0) == 0x40 || code[at] is 0x26 or 0x2E or 0x36 or 0x3E or 0x64 or 0x65 or 0xF0 or 0xF2 or 0xF3 or 0x66 or 0x67)
        {
            at++;
        }

        return code[at] switch
        {
            0xC2 or 0xC3 => "ret",
            0xCC => "int3",
            0xCD => "int",
            _ => instruction.Kind switch
            {
                InstructionKind.Call => "call",
                InstructionKind.ConditionalBranch => "jcc",
                InstructionKind.UnconditionalBranch or InstructionKind.Exit => "jmp",
                _ => "instruction",
            },
        };
    }
}
