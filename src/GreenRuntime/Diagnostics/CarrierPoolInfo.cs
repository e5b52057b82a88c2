namespace GreenRuntime;

/// <summary>Statistics of the carrier-thread pool a hub draws from (shared by every hub with the same carrier stack size).</summary>
public sealed class CarrierPoolInfo
{
    internal CarrierPoolInfo() { }

    /// <summary>Stack size of the pool's threads, in bytes (<see cref="HubOptions.CarrierStackSize"/>).</summary>
    public int StackSize { get; internal init; }

    /// <summary>Threads the pool has created so far (they are never destroyed).</summary>
    public int Created { get; internal init; }

    /// <summary>Threads parked in the pool, ready for work.</summary>
    public int Idle { get; internal init; }

    /// <summary>Threads out of the pool: keeping a suspended greenlet's stack or running hub code, for any hub.</summary>
    public int Busy => Math.Max(0, Created - Idle);

    /// <summary>Stackful greenlets of this hub that are alive: each needs a carrier while suspended.</summary>
    public int HeldByThisHub { get; internal init; }
}
