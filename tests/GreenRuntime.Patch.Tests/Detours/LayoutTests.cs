using System.Reflection;
using System.Runtime.CompilerServices;
using DetourTargets;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>Re-verifies, on this runtime, the layout constants the engine relies on.</summary>
[TestFixture]
public class LayoutTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void NotInlineBitIsWhereRuntimeLayoutSaysAndDetourSetsIt()
    {
        Assert.That(Flags(Method(typeof(LayoutTargets), nameof(LayoutTargets.NeverInlined))) & RuntimeLayout.NotInlineMask, Is.Not.Zero);
        MethodInfo inlineable = Method(typeof(TieredTargets), nameof(TieredTargets.Inlineable));
        Assert.That(Flags(inlineable) & RuntimeLayout.NotInlineMask, Is.Zero);
        using (Detour.Create(inlineable, Method(typeof(LayoutTargets), nameof(LayoutTargets.Replacement))))
        {
            Assert.That(Flags(inlineable) & RuntimeLayout.NotInlineMask, Is.Not.Zero);
        }

        Assert.That(Flags(inlineable) & RuntimeLayout.NotInlineMask, Is.Not.Zero, "NotInline stays set after Dispose.");
    }

    [Test]
    public void IntrinsicBitIsWhereRuntimeLayoutSays()
    {
        Assert.That(Flags(typeof(string).GetProperty(nameof(string.Length))!.GetMethod!) & RuntimeLayout.IntrinsicMask, Is.Not.Zero);
        Assert.That(Flags(Method(typeof(LayoutTargets), nameof(LayoutTargets.NeverInlined))) & RuntimeLayout.IntrinsicMask, Is.Zero);
    }

    [Test]
    public unsafe void CodeHeaderGivesTheLengthOfAJittedBody()
    {
        MethodInfo method = Method(typeof(LayoutTargets), nameof(LayoutTargets.WithFunclet));
        RuntimeHelpers.PrepareMethod(method.MethodHandle);
        nint body = CodeLocator.FindBody(method.MethodHandle.GetFunctionPointer()).Address;
        int? size = CodeHeader.TryReadBodySize(body, method.MethodHandle.Value);
        Assert.That(size, Is.Not.Null, "the RealCodeHeader before a JIT-compiled body names its MethodDesc at the offset RuntimeLayout expects");

        AssertInstructionsEndExactlyAt(body, size!.Value);
        Assert.That(CodeHeader.TryReadBodySize(body, LayoutTargetsMethodDesc(nameof(LayoutTargets.Fresh))), Is.Null, "a header naming another method is not believed");
    }

    [Test]
    public void AMethodWithNoCodeYetIsRecognisedNotWalkedIntoTheFixupThunk()
    {
        MethodInfo method = Method(typeof(LayoutTargets), nameof(LayoutTargets.NeverCalled));
        CodeLocator.Body body = CodeLocator.FindBody(method.MethodHandle.GetFunctionPointer());
        Assert.That(body.HasNoCode, Is.True, "never called nor prepared: its precode still leads to the runtime's fixup thunk");
        RuntimeHelpers.PrepareMethod(method.MethodHandle);
        body = CodeLocator.FindBody(method.MethodHandle.GetFunctionPointer());
        Assert.That(body.HasNoCode, Is.False);
    }

    /// <summary>The instructions decoded from the body tile it exactly, and the last one leaves the method.</summary>
    private static unsafe void AssertInstructionsEndExactlyAt(nint body, int size)
    {
        var decoder = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(new ReadOnlySpan<byte>((void*)body, size).ToArray()), (ulong)body);
        Iced.Intel.Instruction last = default;
        while (decoder.IP < (ulong)body + (ulong)size)
        {
            decoder.Decode(out last);
            Assert.That(last.IsInvalid, Is.False, $"an undecodable byte inside the body at +{last.IP - (ulong)body}");
        }

        Assert.That(decoder.IP, Is.EqualTo((ulong)body + (ulong)size), "the body's instructions end exactly at its length");
        Assert.That(last.FlowControl, Is.AnyOf(Iced.Intel.FlowControl.Return, Iced.Intel.FlowControl.UnconditionalBranch, Iced.Intel.FlowControl.IndirectBranch, Iced.Intel.FlowControl.Interrupt, Iced.Intel.FlowControl.Call),
            $"the body ends with an instruction that leaves it, not '{last}'");
    }

    private static nint LayoutTargetsMethodDesc(string name) => Method(typeof(LayoutTargets), name).MethodHandle.Value;

    [Test]
    public unsafe void EntryIsAPrecodeWhoseCellLeadsToTheBody()
    {
        MethodInfo method = Method(typeof(LayoutTargets), nameof(LayoutTargets.Fresh));
        RuntimeHelpers.PrepareMethod(method.MethodHandle);
        nint entry = method.MethodHandle.GetFunctionPointer();
        CodeLocator.Body body = CodeLocator.FindBody(entry);
        Assert.Multiple(() =>
        {
            Assert.That(body.Address, Is.Not.EqualTo(entry), "GetFunctionPointer must be a stub, not the body.");
            Assert.That(body.Cell, Is.Not.Zero);
            Assert.That(*(nint*)body.Cell, Is.EqualTo(body.Address));
            Assert.That((long)body.Address % 16, Is.EqualTo(0L), "Bodies are 16-byte aligned.");
            Assert.That(body.StartsWithJump, Is.False);
        });
    }

    [Test]
    public void GuardRefusesTheTierUpOfADetouredMethod()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_TieredCompilation") == "0")
        {
            Assert.Ignore("Tiered compilation is off: there is no tier-up to refuse.");
        }

        // Called normally first, so the method enters the tiering pipeline through the prestub (a method
        // that was only ever PrepareMethod-ed is never call-counted and never tiers up).
        for (int i = 0; i < 5; i++)
        {
            _ = TieredTargets.TierMe(i);
        }

        MethodInfo target = Method(typeof(TieredTargets), nameof(TieredTargets.TierMe));
        using Detour d = Detour.Create(target, Method(typeof(LayoutTargets), nameof(LayoutTargets.Replacement)));
        long before = JitGuard.RefusedCompiles;
        using var never = new ManualResetEvent(false);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (JitGuard.RefusedCompiles == before && DateTime.UtcNow < deadline)
        {
            for (int i = 0; i < 100; i++)
            {
                Assert.That(TieredTargets.TierMe(i), Is.EqualTo(-i));
            }

            never.WaitOne(20);
        }

        Assert.That(JitGuard.RefusedCompiles, Is.GreaterThan(before), "The tier-1 compile of a detoured method must reach the guard (ftn at [rdx]) and be refused.");
        Assert.That(TieredTargets.TierMe(3), Is.EqualTo(-3), "After the refused tier-up the detour still holds.");
    }

    private static unsafe uint Flags(MethodBase method) =>
        *(uint*)(method.MethodHandle.Value + RuntimeLayout.MethodDescFlagsWordOffset);
}

internal static class LayoutTargets
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int WithFunclet(int x)
    {
        int sum = 0;
        try
        {
            for (int i = 0; i < x; i++) sum += checked(i * x);
        }
        catch (OverflowException)
        {
            sum = -1;
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int NeverCalled(int x) => (x * 7) - 3;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int NeverInlined(int x) => x + 1;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Fresh(int x) => ((x * 11) ^ (x >> 3)) + 5;

    public static int Replacement(int x) => -x;
}
