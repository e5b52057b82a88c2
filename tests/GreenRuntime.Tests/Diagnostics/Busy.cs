using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Tests.Diagnostics;

/// <summary>Code that blocks the hub the way legacy code does: frames the blocking monitor must name.</summary>
internal static class Busy
{
    /// <summary>A CPU loop that never yields. It reads the clock only now and then, so that a snapshot almost always
    /// finds the thread in this method's own code rather than inside the clock's P/Invoke.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static ulong SpinWithoutYielding(TimeSpan duration)
    {
        var sw = Stopwatch.StartNew();
        ulong x = 1;
        while (sw.Elapsed < duration)
        {
            for (int i = 0; i < 200_000; i++)
                x = x * 6364136223846793005UL + 1442695040888963407UL;
        }
        return x;
    }

    /// <summary>An unpatched OS sleep: the carrier thread blocks in the kernel while holding the baton.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void UnpatchedThreadSleep(TimeSpan duration) => Thread.Sleep(duration);

    /// <summary>Spins like <see cref="SpinWithoutYielding"/> but yields to the hub every few milliseconds.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void SpinYieldingOften(TimeSpan duration)
    {
        var sw = Stopwatch.StartNew();
        var lastYield = TimeSpan.Zero;
        while (sw.Elapsed < duration)
        {
            if (sw.Elapsed - lastYield > TimeSpan.FromMilliseconds(5))
            {
                Green.Sleep(0);
                lastYield = sw.Elapsed;
            }
        }
    }
}
