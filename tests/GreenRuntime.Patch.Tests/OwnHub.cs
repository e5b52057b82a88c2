using System.Runtime.ExceptionServices;

namespace GreenRuntime.Patch.Tests;

/// <summary>A hub on a thread of its own, for tests of what could deadlock a hub: a deadlock then fails the test
/// instead of hanging the run (the deadlocked hub's thread is left behind).</summary>
internal static class OwnHub
{
    /// <summary>Runs <paramref name="body"/> on a new hub of a new thread (no blocking monitor) and fails, saying
    /// <paramref name="deadlock"/>, if it has not finished within <paramref name="limit"/>.</summary>
    public static void Run(Action body, TimeSpan limit, string deadlock)
    {
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
                body();
            }
            catch (Exception e)
            {
                error = e;
            }
        }) { IsBackground = true, Name = "test hub" };
        thread.Start();
        Assert.That(thread.Join(limit), Is.True, deadlock);
        if (error != null) ExceptionDispatchInfo.Throw(error);
    }
}
