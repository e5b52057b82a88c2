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

    [Test]
    public unsafe void ADiversionUndoneWhileTheBatchWritesItsJumpsHoldsThatJumpBackForAWaitOfItsOwn()
    {
        MethodInfo first = Method(typeof(DiversionTargets), nameof(DiversionTargets.Eleven));
        MethodInfo second = Method(typeof(DiversionTargets), nameof(DiversionTargets.Thirteen));
        MethodInfo negate = Method(typeof(DiversionTargets), nameof(DiversionTargets.Negate));
        RuntimeHelpers.PrepareMethod(second.MethodHandle);
        nint secondEntry = second.MethodHandle.GetFunctionPointer();
        nint secondBody = CodeLocator.FindBody(secondEntry).Address;
        bool firstLiveWhenSecondLost = false;
        int secondChecks = 0;

        // After the wait, between the first jump and the second: the simulated runtime write lands once the batch
        // has begun writing, where a check of the whole batch before its first jump would not see it.
        Detour.BeforeWriteForTesting = d =>
        {
            if (d.Target != second || secondChecks++ != 0) return;
            firstLiveWhenSecondLost = DiversionTargets.Eleven(2) == -2;
            Volatile.Write(ref *(nint*)CodeLocator.FindBody(secondEntry).Cell, secondBody);
        };
        DetourOutcome[] outcomes;
        try
        {
            outcomes = Detour.CreateBatch([new DetourRequest(first, negate), new DetourRequest(second, negate)]);
        }
        finally
        {
            Detour.BeforeWriteForTesting = null;
        }

        try
        {
            CodeLocator.Body after = CodeLocator.FindBody(secondEntry);
            Assert.Multiple(() =>
            {
                Assert.That(outcomes.Select(o => o.Error), Is.All.Null);
                Assert.That(firstLiveWhenSecondLost, Is.True, "the first jump was written before the second was checked");
                Assert.That(secondChecks, Is.EqualTo(2), "the second jump was checked again after a wait of its own");
                Assert.That(Detour.LastBatch.Rediverted, Is.EqualTo(1), "the lost diversion was seen and made again");
                Assert.That(Detour.LastBatch.Slept, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(24)),
                    "a whole wait followed the second diversion");
                Assert.That((after.Address, after.StartsWithJump), Is.EqualTo((secondBody, true)), "the cell leads to the patched body again");
                Assert.That((DiversionTargets.Eleven(3), DiversionTargets.Thirteen(3)), Is.EqualTo((-3, -3)), "both detours are live");
            });
        }
        finally
        {
            foreach (DetourOutcome o in outcomes) o.Detour?.Dispose();
        }
    }
}

internal static class DiversionTargets
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Seven(int x) => x * 7 + (x >> 30);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Eleven(int x) => x * 11 + (x >> 29);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Thirteen(int x) => x * 13 + (x >> 28);

    public static int Negate(int x) => -x;
}
