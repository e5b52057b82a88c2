namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Holds every thread the thread pool has in a blocking wait until disposed, with more holders queued for the threads
/// it may add: what legacy blocking code does to the pool. A wake that needs a pool thread then waits for the pool to
/// grow (one or two threads a second), which a test measures as seconds instead of milliseconds.
/// </summary>
/// <remarks>The pool keeps the threads it injected for an earlier test for a while, so holding only its minimum can
/// leave some free, and a free thread would start the work a test offers next. So the constructor returns only once
/// holders are still queued (every thread is busy), queuing more while all of them have been taken.</remarks>
internal sealed class HeldThreadPool : IDisposable
{
    private readonly ManualResetEventSlim _release = new();
    private readonly List<Task> _holders = [];

    public HeldThreadPool(int spare = 8)
    {
        ThreadPool.GetMinThreads(out int minimum, out _);
        try
        {
            Hold(Math.Max(minimum, ThreadPool.ThreadCount) + spare);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (true)
            {
                Thread.Sleep(20); // time for every free thread to take a holder
                if (ThreadPool.PendingWorkItemCount > 0) return;
                if (DateTime.UtcNow > deadline)
                    throw new InvalidOperationException($"The thread pool ({ThreadPool.ThreadCount} threads) took every holder for 10 s.");
                Hold(spare);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private void Hold(int count)
    {
        for (int i = 0; i < count; i++) _holders.Add(Task.Run(() => _release.Wait()));
    }

    public void Dispose()
    {
        _release.Set();
        Task.WaitAll(_holders);
        _release.Dispose();
    }
}
