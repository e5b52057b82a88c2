using System.Diagnostics;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// What happened around one call that splits its work between the calling greenlet and pool threads (<c>Parallel.For</c>,
/// a PLINQ query), for tests that kill the greenlet or let its timeout expire meanwhile: whether work was still running
/// when the call returned, or ended after it, and what the call threw.
/// </summary>
internal sealed class SplitWorkScene
{
    public int PoolRunning;
    public int Running;
    public int FinishedAfterReturn;
    public int RunningAtReturn = -1;
    public bool Returned;
    public Exception? Thrown;

    /// <summary>One piece of work. On the greenlet: waits, shielded, until the pool runs a piece too, then sleeps (patched)
    /// until the kill or timeout ends it. On a pool thread: a real 300 ms sleep.</summary>
    public void Work()
    {
        Interlocked.Increment(ref Running);
        try
        {
            if (Parking.CurrentHub is not null)
            {
                var waited = Stopwatch.StartNew();
                using (Green.Shield())
                {
                    while (Volatile.Read(ref PoolRunning) == 0 && waited.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(5);
                }
                Thread.Sleep(10_000);
            }
            else
            {
                Interlocked.Increment(ref PoolRunning);
                try { Thread.Sleep(300); }
                finally { Interlocked.Decrement(ref PoolRunning); }
            }
        }
        finally
        {
            Interlocked.Decrement(ref Running);
            if (Volatile.Read(ref Returned)) Interlocked.Increment(ref FinishedAfterReturn);
        }
    }

    /// <summary>Makes the call, recording what it threw and how much work was still running when it returned.</summary>
    public void Run(Action call)
    {
        try
        {
            call();
        }
        catch (Exception e)
        {
            Thrown = e;
            throw;
        }
        finally
        {
            RunningAtReturn = Volatile.Read(ref Running);
            Volatile.Write(ref Returned, true);
        }
    }

    /// <summary>Lets work that outlived the call end, so that it is counted.</summary>
    public void Settle()
    {
        var watch = Stopwatch.StartNew();
        while (Volatile.Read(ref Running) > 0 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(10);
    }
}
