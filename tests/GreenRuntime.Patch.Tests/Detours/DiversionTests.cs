using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>
/// While a jump waits to be written, new calls run the trampoline; when the runtime undoes that diversion
/// (tiering re-points its entry stubs on its own), the engine diverts again and waits again.
/// </summary>
[TestFixture]
public class DiversionTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public unsafe void ADiversionUndoneDuringTheWaitIsMadeAgainAndWaitedFor()
    {
        MethodInfo target = Method(typeof(DiversionTargets), nameof(DiversionTargets.Seven));
        RuntimeHelpers.PrepareMethod(target.MethodHandle);
        nint entry = target.MethodHandle.GetFunctionPointer();
        nint body = CodeLocator.FindBody(entry).Address;
        nint divertedTo = 0;
        bool callsReachedTheBodyAgain = false;

        // The callback runs inside the wait, after the diversion: it plays the runtime and points the cell
        // back at the body, as a tiering step does.
        using Detour d = Detour.Create(target, Method(typeof(DiversionTargets), nameof(DiversionTargets.Negate)), _ =>
        {
            CodeLocator.Body during = CodeLocator.FindBody(entry);
            divertedTo = during.Address;
            Volatile.Write(ref *(nint*)during.Cell, body);
            callsReachedTheBodyAgain = CodeLocator.FindBody(entry).Address == body;
        });

        CodeLocator.Body after = CodeLocator.FindBody(entry);
        Assert.Multiple(() =>
        {
            Assert.That(divertedTo, Is.Not.EqualTo(body), "calls ran elsewhere while the jump waited");
            Assert.That(callsReachedTheBodyAgain, Is.True, "the simulated runtime write took effect");
            Assert.That(Detour.LastBatch.Rediverted, Is.EqualTo(1), "the lost diversion was seen and made again");
            Assert.That(Detour.LastBatch.Slept, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(24)),
                "a whole wait followed the second diversion");
            Assert.That((after.Address, after.StartsWithJump), Is.EqualTo((body, true)), "the cell leads to the patched body again");
            Assert.That(DiversionTargets.Seven(3), Is.EqualTo(-3), "the detour is live");
        });
    }
}

internal static class DiversionTargets
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Seven(int x) => x * 7 + (x >> 30);

    public static int Negate(int x) => -x;
}
