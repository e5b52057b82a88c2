namespace ReadyToRunTargets;

/// <summary>A class whose static field initialiser sleeps: the first use of <see cref="Value"/> blocks.</summary>
public static class SleepingStatics
{
    public static int Runs;

    public static readonly int Value = Initialise();

    private static int Initialise()
    {
        Interlocked.Increment(ref Runs);
        Thread.Sleep(300);
        return 42;
    }
}

/// <summary>Precompiled code that touches the class above: its initialisation starts in the runtime's native
/// fixup of the static base, not in <c>InitHelpers.InitClassSlow</c>.</summary>
public static class Touch
{
    public static int Sleeping() => SleepingStatics.Value;
}
