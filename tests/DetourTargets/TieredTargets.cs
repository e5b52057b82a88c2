using System.Runtime.CompilerServices;

namespace DetourTargets;

/// <summary>Small methods in an optimized assembly: they tier up, and the JIT would inline the unmarked ones.</summary>
public static class TieredTargets
{
    /// <summary>Inlineable (no NoInlining): only the NotInline bit keeps new callers from inlining it.</summary>
    public static int Compute(int x) => ((x ^ (x >> 3)) * 7) + (x & 0xF0) - 11;

    /// <summary>Inlineable, for the NotInline layout test.</summary>
    public static int Inlineable(int x) => ((x * 9) ^ (x >> 3)) + 5;

    /// <summary>Called normally, then detoured: its tier-1 compile must be refused by the JIT guard.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int TierMe(int x) => ((x * 13) ^ (x >> 3)) + 5;
}
