using GreenRuntime.Detours;
using Iced.Intel;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>
/// The machine code the engine writes without an assembler: the JIT guard stub (checked against Iced's decoder)
/// and relocated prologues (run on synthetic functions whose first instructions are position-dependent).
/// </summary>
[TestFixture]
public class MachineCodeTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void JitGuardStubDecodesToTheDocumentedInstructions()
    {
        const ulong Base = 0x7000_0000_0000;
        byte[] stub = JitGuard.AssembleStub(unchecked((nint)0x1122_3344_5566_7788), unchecked((nint)0x0102_0304_0506_0708));
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(stub), Base);
        var formatter = new IntelFormatter();
        formatter.Options.HexSuffix = "h";
        var lines = new List<string>();
        while (decoder.IP < Base + 53)
        {
            decoder.Decode(out Instruction instruction);
            var output = new StringOutput();
            formatter.Format(instruction, output);
            lines.Add($"{instruction.IP - Base}: {output.ToStringAndReset()}");
        }

        Assert.That(lines, Is.EqualTo(new[]
        {
            "0: mov r10,1122334455667788h",
            "10: mov r11,[rdx]",
            "14: mov rax,[r10]",
            "17: test rax,rax",
            $"20: je short {Base + 33:X16}h",
            "22: cmp r11,[r10+rax*8]",
            $"26: je short {Base + 39:X16}h",
            "28: dec rax",
            $"31: jmp short {Base + 17:X16}h",
            $"33: jmp qword ptr [{Base + 53:X}h]",
            "39: lock inc qword ptr [r10+0FFF8h]",
            "47: mov eax,80000001h",
            "52: ret",
        }));
        Assert.That(BitConverter.ToInt64(stub, 53), Is.EqualTo(0x0102_0304_0506_0708), "the original compileMethod follows the code");
        Assert.That(stub, Has.Length.EqualTo(61));
    }

    [Test]
    public unsafe void RipRelativePrologueIsRebasedAndRuns()
    {
        // mov rax, [rip+data]; add rax, 1; ret; int3 padding; data: dq 41
        byte[] code = [0x48, 0x8B, 0x05, 0, 0, 0, 0, 0x48, 0x83, 0xC0, 0x01, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, .. BitConverter.GetBytes(41L)];
        BitConverter.TryWriteBytes(code.AsSpan(3), 16 - 7);
        nint body = Synthetic(code);
        Assert.That(((delegate* unmanaged<long>)body)(), Is.EqualTo(42), "the synthetic function itself");

        Trampoline.Prologue prologue = Trampoline.Analyze(body, "synthetic");
        nint trampoline = Trampoline.Build(prologue);
        Assert.That(trampoline, Is.Not.EqualTo(body));
        Assert.That(((delegate* unmanaged<long>)trampoline)(), Is.EqualTo(42), "the relocated load must still read the data next to the body");
    }

    [Test]
    public unsafe void ShortConditionalJumpInThePrologueIsWidenedAndRuns()
    {
        // test edi, edi; je +20 (to 24); mov eax, 1; ret; nop x 13; 24: mov eax, 2; ret; int3
        var code = new List<byte> { 0x85, 0xFF, 0x74, 20, 0xB8, 1, 0, 0, 0, 0xC3 };
        code.AddRange(Enumerable.Repeat((byte)0x90, 24 - code.Count));
        code.AddRange([0xB8, 2, 0, 0, 0, 0xC3, 0xCC, 0xCC]);
        nint body = Synthetic(code.ToArray());
        var function = (delegate* unmanaged<int, int>)body;
        Assert.That((function(0), function(5)), Is.EqualTo((2, 1)), "the synthetic function itself");

        Trampoline.Prologue prologue = Trampoline.Analyze(body, "synthetic");
        Assert.That(prologue.Instructions.Any(i => i.Kind == InstructionKind.ConditionalBranch), Is.True);
        var relocated = (delegate* unmanaged<int, int>)Trampoline.Build(prologue);
        Assert.That((relocated(0), relocated(5)), Is.EqualTo((2, 1)), "the widened jump must reach the same target in the body");
    }

    [Test]
    public unsafe void PrologueOnlyIcedCanRelocateIsReencodedAndRuns()
    {
        // mov rcx, rdi; jrcxz +20 (to 24); mov eax, 1; ret; nop x 12; 24: mov eax, 2; ret; int3. jrcxz has no rel32
        // form and the engine's decoder leaves it to Iced, whose encoder rewrites it for the trampoline.
        var code = new List<byte> { 0x48, 0x89, 0xF9, 0xE3, 19, 0xB8, 1, 0, 0, 0, 0xC3 };
        code.AddRange(Enumerable.Repeat((byte)0x90, 24 - code.Count));
        code.AddRange([0xB8, 2, 0, 0, 0, 0xC3, 0xCC, 0xCC]);
        nint body = Synthetic(code.ToArray());
        var function = (delegate* unmanaged<long, int>)body;
        Assert.That((function(0), function(5)), Is.EqualTo((2, 1)), "the synthetic function itself");

        Trampoline.Prologue prologue = Trampoline.Analyze(body, "synthetic");
        var relocated = (delegate* unmanaged<long, int>)Trampoline.Build(prologue);
        Assert.That((relocated(0), relocated(5)), Is.EqualTo((2, 1)), "the re-encoded jrcxz must reach the same target in the body");
    }

    /// <summary>
    /// Puts <paramref name="code"/> in executable memory near the runtime's own code (never freed, like every engine
    /// page). Near, because trampolines must be within ±2 GB of their body: a page mapped anywhere can land between
    /// the GC's huge reservations with no free gap in reach (seen once: "tried 0 free gaps").
    /// </summary>
    private static nint Synthetic(byte[] code)
    {
        nint near = typeof(MachineCodeTests).GetMethod(nameof(Synthetic), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!.MethodHandle.GetFunctionPointer();
        nint body = NearAllocator.Allocate(near, code.Length);
        CodeMemory.WriteCode(body, code);
        return body;
    }

    [Test]
    public void ARangeThatSpansTwoReadableMappingsIsReadable()
    {
        // A runtime stub at the end of its page, followed by a page mapped apart with other protections (how .NET
        // interleaves precode code and data pages): the entry walk reads 24 bytes across the boundary.
        int page = CodeMemory.PageSize;
        nint two = Libc.MMap(0, (nuint)(2 * page), Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        Assert.That(two, Is.Not.EqualTo(Libc.MapFailed));
        Assert.That(Libc.MProtect(two + page, (nuint)page, Libc.ProtRead), Is.Zero, "the second page becomes a mapping of its own");
        Assert.That(CodeMemory.IsReadable(two + page - 16, 24), Is.True, "both pages are readable");
        Assert.That(Libc.MProtect(two + page, (nuint)page, 0), Is.Zero);
        CodeMemory.Refresh(); // the map is a snapshot, re-read only when it answers no
        Assert.That(CodeMemory.IsReadable(two + page - 16, 24), Is.False, "the second page is not");
        Assert.That(CodeMemory.IsReadable(two + page - 24, 24), Is.True, "the first page alone is");
    }
}
