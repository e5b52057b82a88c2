using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Detours a private dummy once per process, calls it, calls its original, undoes it and calls it again,
/// so a runtime whose layout differs from the verified one fails loudly instead of corrupting memory.
/// </summary>
/// <remarks>
/// It also checks the MethodDesc layout: the dummy is [NoInlining], so the runtime must already have set
/// the NotInline bit where <see cref="RuntimeLayout"/> says it is, and the intrinsic bit must be clear.
/// </remarks>
internal static class SelfTest
{
    private const long A = 3;
    private const long B = 7;

    public static unsafe void Run(Func<MethodBase, MethodInfo, Detour> create)
    {
        MethodInfo target = typeof(SelfTest).GetMethod(nameof(Dummy), BindingFlags.NonPublic | BindingFlags.Static)!;
        MethodInfo replacement = typeof(SelfTest).GetMethod(nameof(DummyReplacement), BindingFlags.NonPublic | BindingFlags.Static)!;

        uint flags = *(uint*)(target.MethodHandle.Value + RuntimeLayout.MethodDescFlagsWordOffset);
        Require((flags & RuntimeLayout.NotInlineMask) != 0, "the NotInline bit of a [NoInlining] method is not where expected");
        Require((flags & RuntimeLayout.IntrinsicMask) == 0, "the intrinsic bit is set on an ordinary method");

        long expected = Dummy(A, B);
        Detour detour = create(target, replacement);
        try
        {
            Require(Dummy(A, B) == DummyReplacement(A, B), "a direct call did not reach the replacement");
            var viaDelegate = target.CreateDelegate<Func<long, long, long>>();
            Require(viaDelegate(A, B) == DummyReplacement(A, B), "a delegate call did not reach the replacement");
            // Through the trampoline's entry, as a managed calli: what GetOriginal's delegates do, without building
            // one (Reflection.Emit's first use would add to every process's start-up; its delegates are tested).
            Require(((delegate*<long, long, long>)detour.OriginalEntry)(A, B) == expected, "the original, called through its trampoline, returned a wrong result");
        }
        finally
        {
            detour.Dispose();
        }

        Require(Dummy(A, B) == expected, "the original did not come back after Dispose");
    }

    private static void Require(bool condition, string what)
    {
        if (!condition)
        {
            throw new PlatformNotSupportedException(
                $"The detour engine's self-test failed: {what}. This runtime's layout differs from the verified one; " +
                "detours are disabled in this process.");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Dummy(long a, long b)
    {
        long r = a;
        for (long i = 0; i < b; i++)
        {
            r = (r * 31) + i;
        }

        return r;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long DummyReplacement(long a, long b) => -(a * 1000) - b;
}
