using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

using static UserMethodTests;

/// <summary>Detour.Create's beforeLive callback: the original is in hand before the first redirected call.</summary>
[TestFixture]
public class BeforeLiveTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void TheCallbackGetsAWorkingOriginalBeforeAnyCallIsRedirected()
    {
        MethodInfo target = Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Twice));
        bool appliedInCallback = true;
        int directInCallback = 0;
        using Detour d = Detour.Create(target, Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.TwicePlusThousand)), detour =>
        {
            BeforeLiveTargets.Original = detour.GetOriginal<Func<int, int>>();
            appliedInCallback = detour.IsApplied;
            directInCallback = BeforeLiveTargets.Twice(5); // not redirected yet
        });
        Assert.Multiple(() =>
        {
            Assert.That(appliedInCallback, Is.False, "the jump is not live during the callback");
            Assert.That(directInCallback, Is.EqualTo(10), "a call during the callback runs the original");
            Assert.That(BeforeLiveTargets.Twice(5), Is.EqualTo(1010), "after Create, the replacement runs and calls the original it was given");
        });
    }

    [Test]
    public void ACallbackThatThrowsLeavesTheTargetUndetoured()
    {
        MethodInfo target = Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Thrice));
        MethodInfo replacement = Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Negate));
        var e = Assert.Throws<InvalidDataException>(() => Detour.Create(target, replacement, _ => throw new InvalidDataException("no")));
        Assert.That(e!.Message, Is.EqualTo("no"));
        Assert.That(BeforeLiveTargets.Thrice(2), Is.EqualTo(6), "nothing was written");
        using Detour again = Detour.Create(target, replacement);
        Assert.That(BeforeLiveTargets.Thrice(2), Is.EqualTo(-2), "and the target can be detoured afterwards");
    }

    [Test]
    public void TheCallbackMayNotCreateOrDisposeDetours()
    {
        MethodInfo target = Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Four));
        MethodInfo replacement = Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Negate));
        var e = Assert.Throws<InvalidOperationException>(() => Detour.Create(target, replacement, detour => detour.Dispose()));
        Assert.That(e!.Message, Does.Contain("beforeLive callback must not"));
        e = Assert.Throws<InvalidOperationException>(() => Detour.Create(target, replacement,
            _ => Detour.Create(Method(typeof(BeforeLiveTargets), nameof(BeforeLiveTargets.Thrice)), replacement)));
        Assert.That(e!.Message, Does.Contain("beforeLive callback must not"));
        Assert.That(BeforeLiveTargets.Four(3), Is.EqualTo(12));
    }
}

internal static class BeforeLiveTargets
{
    public static Func<int, int>? Original;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Twice(int x) => x * 2 + (x >> 30);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Thrice(int x) => x * 3 + (x >> 30);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Four(int x) => x * 4 + (x >> 30);

    public static int TwicePlusThousand(int x) => Original!(x) + 1000;

    public static int Negate(int x) => -x;
}
