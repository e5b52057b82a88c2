using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GreenRuntime.Cooperative;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>Every refusal happens before a byte is written, with a message that says why.</summary>
[TestFixture]
public class RefusalTests
{
    private static readonly MethodInfo AnyReplacement = Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Void0));

    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void OpenGenericMethod() =>
        Refused<NotSupportedException>(Method(typeof(RefusalTargets), nameof(RefusalTargets.Generic)), AnyReplacement, "open generic");

    [Test]
    public void GenericInstantiation() =>
        Refused<NotSupportedException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.Generic)).MakeGenericMethod(typeof(string)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.GenericString)),
            "generic instantiations");

    [Test]
    public void AbstractMethod() =>
        Refused<NotSupportedException>(
            typeof(Stream).GetMethod(nameof(Stream.Read), [typeof(byte[]), typeof(int), typeof(int)])!,
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.StreamRead)),
            "abstract");

    [Test]
    public void ExternMethod() =>
        Refused<NotSupportedException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.getpid)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Int0)),
            "extern");

    [Test]
    public void InternalCallMethod()
    {
        MethodInfo fcall = typeof(object).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .First(m => (m.MethodImplementationFlags & MethodImplAttributes.InternalCall) != 0 && !m.IsGenericMethod
                && !m.CustomAttributes.Any(a => a.AttributeType.Name == "IntrinsicAttribute")
                && m.GetParameters().Length == 0 && m.ReturnType == typeof(int));
        Refused<NotSupportedException>(fcall, Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Int0)), "implemented inside the runtime");
    }

    [Test]
    public void JitIntrinsic() =>
        Refused<NotSupportedException>(
            typeof(string).GetProperty(nameof(string.Length))!.GetMethod!,
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.StringLength)),
            "intrinsic");

    [Test]
    public void DynamicMethodTarget()
    {
        var dm = new DynamicMethod("x", typeof(void), Type.EmptyTypes);
        dm.GetILGenerator().Emit(OpCodes.Ret);
        Refused<NotSupportedException>(dm, AnyReplacement, "dynamic");
    }

    [Test]
    public void ReplacementNotStatic() =>
        Refused<ArgumentException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.Work)),
            Method(typeof(RefusalTargets), nameof(RefusalTargets.InstanceWork)),
            "must be static");

    [Test]
    public void SignatureMismatch() =>
        Refused<ArgumentException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.Work)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.WrongWork)),
            "does not match");

    [Test]
    public void ObjectStandsForAReferenceTypeOnlyWhenCSharpCannotNameIt()
    {
        // SafeFileHandle.Open's last parameter is a Func over internal types: a replacement can only declare it as object.
        Assert.That(CooperativeFileOpen.OpenMethod, Is.Not.Null);
        Assert.DoesNotThrow(() => TargetRules.Validate(CooperativeFileOpen.OpenMethod!, Method(typeof(CooperativeFileOpen), nameof(CooperativeFileOpen.Open))));
        // A type the replacement could have named is not widened to object.
        Refused<ArgumentException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.TakesString)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.TakesObject)),
            "does not match");
    }

    [Test]
    public void InstanceTargetWithoutThisParameter() =>
        Refused<ArgumentException>(
            Method(typeof(Counter), nameof(Counter.AddTo)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Int1)),
            "`this` as Counter comes first");

    [Test]
    public void StructThisMustBeByRef() =>
        Refused<ArgumentException>(
            Method(typeof(Accumulator), nameof(Accumulator.Push)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.PushByValue)),
            "`ref Accumulator` for `this` comes first");

    [Test]
    public void InstanceMethodReturningStructThroughHiddenBuffer() =>
        Refused<NotSupportedException>(
            Method(typeof(RefusalTargets), nameof(RefusalTargets.InstanceBig)),
            Method(typeof(RefusalReplacements), nameof(RefusalReplacements.InstanceBig)),
            "hidden return buffer");

    [Test]
    public void BodyTooSmall()
    {
        // Version.Major is `mov eax, [rdi+8]; ret` (4 bytes) once optimized: ReadyToRun, tier-1 or full-opt.
        // (This test project is built without optimization, so a tiny method of its own would get a frame.)
        // With ReadyToRun off, wait for tiering to replace its tier-0 body.
        MethodInfo major = typeof(Version).GetProperty(nameof(Version.Major))!.GetMethod!;
        var version = new Version(1, 2);
        var deadline = DateTime.UtcNow.AddSeconds(15);
        using var never = new ManualResetEvent(false);
        while (!IsTiny(major))
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Inconclusive("Version.Major never got an optimized (tiny) body in this configuration.");
            }

            for (int i = 0; i < 1000; i++)
            {
                _ = version.Major;
            }

            never.WaitOne(20);
        }

        Refused<NotSupportedException>(major, Method(typeof(RefusalReplacements), nameof(RefusalReplacements.VersionMajor)), "too small");

        static bool IsTiny(MethodInfo method)
        {
            RuntimeHelpers.PrepareMethod(method.MethodHandle);
            nint body = CodeLocator.FindBody(method.MethodHandle.GetFunctionPointer()).Address;
            try
            {
                _ = Trampoline.Analyze(body, "probe");
                return false;
            }
            catch (NotSupportedException e) when (e.Message.Contains("too small"))
            {
                return true;
            }
        }
    }

    [Test]
    public void AlreadyDetouredByUs()
    {
        MethodInfo target = Method(typeof(RefusalTargets), nameof(RefusalTargets.Work));
        MethodInfo replacement = Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Work));
        using Detour first = Detour.Create(target, replacement);
        Refused<InvalidOperationException>(target, replacement, "already detoured");
        Assert.That(RefusalTargets.Work(5), Is.EqualTo(-5), "The refused second detour must not disturb the first.");
    }

    [Test]
    public unsafe void ForeignJumpAtBodyStart()
    {
        MethodInfo target = Method(typeof(RefusalTargets), nameof(RefusalTargets.Foreign));
        RuntimeHelpers.PrepareMethod(target.MethodHandle);
        nint body = CodeLocator.FindBody(target.MethodHandle.GetFunctionPointer()).Address;
        nint qword = body & ~(nint)7;
        long original = *(long*)qword;

        // Pretend another library detoured it: `E9 rel32` to the body itself + 5 (harmless if executed).
        Span<byte> bytes = stackalloc byte[8];
        BitConverter.TryWriteBytes(bytes, original);
        int offset = (int)(body - qword);
        bytes[offset] = 0xE9;
        BitConverter.TryWriteBytes(bytes.Slice(offset + 1, 4), 0x1000);
        long patched = BitConverter.ToInt64(bytes);
        Assert.That(CodeMemory.CompareExchangeCode(qword, original, patched), Is.True);
        try
        {
            Refused<NotSupportedException>(target, Method(typeof(RefusalReplacements), nameof(RefusalReplacements.Work)), "already starts with a jump");
        }
        finally
        {
            Assert.That(CodeMemory.CompareExchangeCode(qword, patched, original), Is.True);
        }

        Assert.That(RefusalTargets.Foreign(3), Is.EqualTo(RefusalTargets.Work(3) + 1));
    }

    private static void Refused<TException>(MethodBase target, MethodInfo replacement, string reason)
        where TException : Exception
    {
        var e = Assert.Throws<TException>(() => Detour.Create(target, replacement).Dispose());
        Assert.That(e!.Message, Does.Contain(reason));
        TestContext.Out.WriteLine($"{typeof(TException).Name}: {e.Message}");
    }
}

internal sealed class RefusalTargets
{
    public static T Generic<T>(T value) => value;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int TakesString(string text) => text.Length + Environment.ProcessorCount;

    [DllImport("libc")]
    public static extern int getpid();

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Work(int x) => (x * 17) + (x >> 2) - (x & 0x55) + 3;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Foreign(int x) => (x * 17) + (x >> 2) - (x & 0x55) + 4;

    public int InstanceWork(int x) => x;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public Big InstanceBig(long x) => new() { A = x };
}

internal static class RefusalReplacements
{
    public static void Void0()
    {
    }

    public static int Int0() => 0;

    public static int TakesObject(object text) => 0;

    public static int Int1(int x) => x;

    public static string GenericString(string s) => s;

    public static int StreamRead(Stream s, byte[] b, int o, int c) => 0;

    public static int StringLength(string s) => 0;

    public static int VersionMajor(Version v) => 0;

    public static long WrongWork(int x) => x;

    public static int Work(int x) => -x;

    public static void PushByValue(Accumulator self, int value)
    {
    }

    public static Big InstanceBig(RefusalTargets self, long x) => default;
}
