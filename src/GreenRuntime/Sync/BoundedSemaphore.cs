namespace GreenRuntime;

/// <summary>A <see cref="GreenSemaphore"/> that refuses to be released more times than it was acquired (gevent's <c>BoundedSemaphore</c>).</summary>
/// <remarks>The bound is the initial count. An over-release throws to the caller, whatever thread it runs on.</remarks>
public sealed class BoundedSemaphore : GreenSemaphore
{
    /// <summary>Creates a semaphore with <paramref name="initialCount"/> permits, which is also its upper bound.</summary>
    public BoundedSemaphore(int initialCount = 1) : base(initialCount) => Bound = initialCount;

    /// <summary>The most permits it may hold.</summary>
    public int Bound { get; }

    private protected override void CheckRelease(int countBefore)
    {
        if (countBefore >= Bound)
            throw new InvalidOperationException($"{this} was released more times than it was acquired (bound {Bound}). Release once per successful Acquire.");
    }
}
