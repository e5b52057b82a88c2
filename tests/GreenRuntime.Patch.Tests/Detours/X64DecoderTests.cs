using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;
using Iced.Intel;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>
/// The engine's own decoder against Iced: wherever Iced decodes a valid instruction, <see cref="X64Decoder"/> must
/// answer Unknown or agree on length, kind, branch target and RIP-relative displacement — over random bytes and
/// over real JIT-compiled and ReadyToRun code. It must also know nearly all of real code, or it saves nothing.
/// </summary>
[TestFixture]
public class X64DecoderTests
{
    private const ulong Base = 0x7F00_1234_5000;

    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public unsafe void AgreesWithIcedOnRandomBytes()
    {
        // Random bytes, but shaped like instructions often enough to reach every branch of the decoder:
        // prefixes, REX, the 0F/0F38/0F3A escapes and VEX/EVEX lead bytes are drawn with a raised probability.
        var random = new Random(20261202);
        byte[] bytes = new byte[16];
        int valid = 0, known = 0;
        var mismatches = new List<string>();
        for (int i = 0; i < 2_000_000 && mismatches.Count < 20; i++)
        {
            random.NextBytes(bytes);
            int at = 0;
            if (random.Next(4) == 0) bytes[at++] = (byte)Pick(random, [0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x3E, 0x64]);
            if (random.Next(3) == 0) bytes[at++] = (byte)(0x40 | random.Next(16));
            switch (random.Next(6))
            {
                case 0: bytes[at] = 0x0F; break;
                case 1: bytes[at] = 0x0F; bytes[at + 1] = (byte)(random.Next(2) == 0 ? 0x38 : 0x3A); break;
                case 2: bytes[at] = (byte)Pick(random, [0xC4, 0xC5, 0x62]); break;
            }

            Compare(bytes, Base, ref valid, ref known, mismatches);
        }

        Assert.That(mismatches, Is.Empty);
        Assert.That(known, Is.GreaterThan(valid / 2), $"the decoder knows too little: {known} of {valid} valid instructions");
    }

    [Test]
    public unsafe void AgreesWithIcedOnRealCode()
    {
        int valid = 0, known = 0, bodies = 0, jitted = 0;
        var mismatches = new List<string>();
        foreach (MethodInfo method in SomeMethods())
        {
            nint entry;
            try
            {
                RuntimeHelpers.PrepareMethod(method.MethodHandle);
                entry = method.MethodHandle.GetFunctionPointer();
            }
            catch (Exception)
            {
                continue;
            }

            CodeLocator.Body body = CodeLocator.FindBody(entry);
            if (body.HasNoCode || body.StartsWithJump)
            {
                continue;
            }

            // A JIT-compiled body is decoded to its end; a ReadyToRun one until its padding.
            int? size = CodeHeader.TryReadBodySize(body.Address, method.MethodHandle.Value);
            int length = size ?? 512;
            if (CodeMemory.FindRegion(body.Address) is not { } region || (ulong)body.Address + (ulong)length > region.End)
            {
                continue;
            }

            bodies++;
            jitted += size is null ? 0 : 1;
            byte* start = (byte*)body.Address;
            int offset = 0;
            while (offset < length && mismatches.Count < 20)
            {
                byte[] window = new ReadOnlySpan<byte>(start + offset, Math.Min(16, length - offset)).ToArray();
                int icedLength = Compare(window, (ulong)body.Address + (ulong)offset, ref valid, ref known, mismatches, method.Name);
                if (icedLength == 0 || (size is null && start[offset] == 0xCC))
                {
                    break;
                }

                offset += icedLength;
            }
        }

        TestContext.Out.WriteLine($"COVER {known}/{valid} bodies {bodies} jitted {jitted}");
        Assert.That(bodies, Is.GreaterThan(500), "enough bodies were decoded");
        Assert.That(mismatches, Is.Empty);
        Assert.That(known, Is.GreaterThan(valid * 99L / 100), $"the decoder knows too little real code: {known} of {valid} instructions");
    }

    /// <summary>Methods with real code: ReadyToRun code from a few framework assemblies, JIT-compiled code from Iced
    /// (an IL-only package).</summary>
    private static IEnumerable<MethodInfo> SomeMethods()
    {
        Assembly[] assemblies = [typeof(object).Assembly, typeof(System.Net.Sockets.Socket).Assembly, typeof(Enumerable).Assembly,
            typeof(System.Collections.Immutable.ImmutableArray).Assembly, typeof(Decoder).Assembly];
        foreach (Assembly assembly in assemblies)
        {
            int taken = 0;
            foreach (Type type in assembly.GetTypes())
            {
                if (type.IsGenericTypeDefinition || type.IsInterface)
                {
                    continue;
                }

                foreach (MethodInfo method in type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
                {
                    if (method.IsAbstract || method.IsGenericMethodDefinition || method.GetMethodBody() is null || method.Name.StartsWith('<'))
                    {
                        continue;
                    }

                    if (++taken > 1500)
                    {
                        goto next;
                    }

                    yield return method;
                }
            }

        next:;
        }
    }

    /// <summary>Decodes the first instruction of <paramref name="bytes"/> both ways; returns Iced's length (0: invalid).</summary>
    private static unsafe int Compare(byte[] bytes, ulong ip, ref int valid, ref int known, List<string> mismatches, string? where = null)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), ip);
        decoder.Decode(out Instruction iced);
        DecodedInstruction ours;
        fixed (byte* code = bytes)
        {
            ours = X64Decoder.Decode(code, bytes.Length, (long)ip);
        }

        if (iced.IsInvalid)
        {
            return 0;
        }

        valid++;
        if (ours.Kind == InstructionKind.Unknown)
        {
            return iced.Length;
        }

        known++;
        ConstantOffsets offsets = decoder.GetConstantOffsets(iced);
        InstructionKind expectedKind = iced.FlowControl switch
        {
            FlowControl.Next => InstructionKind.Next,
            FlowControl.ConditionalBranch => InstructionKind.ConditionalBranch,
            FlowControl.UnconditionalBranch => InstructionKind.UnconditionalBranch,
            FlowControl.Call or FlowControl.IndirectCall => InstructionKind.Call,
            FlowControl.Return or FlowControl.Interrupt or FlowControl.IndirectBranch => InstructionKind.Exit,
            _ => InstructionKind.Unknown,
        };
        bool branch = ours.Kind is InstructionKind.ConditionalBranch or InstructionKind.UnconditionalBranch;
        bool agrees = ours.Length == iced.Length
            && ours.Kind == expectedKind
            && (!branch || (ulong)ours.BranchTarget == iced.NearBranchTarget)
            && ours.IsRipRelative == iced.IsIPRelativeMemoryOperand
            && (!ours.IsRipRelative || ours.RipDisplacementOffset == offsets.DisplacementOffset);
        if (!agrees)
        {
            mismatches.Add($"{where} {BitConverter.ToString(bytes, 0, Math.Max(iced.Length, ours.Length)).Replace('-', ' ')}: Iced {iced.Code} " +
                $"length {iced.Length} {iced.FlowControl} rip {iced.IsIPRelativeMemoryOperand}/{offsets.DisplacementOffset}; ours {ours}");
        }

        return iced.Length;
    }

    private static int Pick(Random random, int[] choices) => choices[random.Next(choices.Length)];
}
