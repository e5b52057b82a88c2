namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Holds every thread the thread pool starts with, and a few it may add, in a blocking wait until disposed: what legacy
/// blocking code does to the pool. A wake that needs a pool thread then waits for the pool to grow (one or two threads
/// a second), which a test measures as seconds instead of milliseconds.
/// </summary>
internal sealed class HeldThreadPool : IDisposable
{
    private readonly ManualResetEventSlim _release = new();
    private readonly Task[] _holders;

    public HeldThreadPool(int beyondMinimum = 8)
    {
        ThreadPool.GetMinThreads(out int minimum, out _);
        _holders = Enumerable.Range(0, minimum + beyondMinimum).Select(_ => Task.Run(() => _release.Wait())).ToArray();
    }

    public void Dispose()
    {
        _release.Set();
        Task.WaitAll(_holders);
        _release.Dispose();
    }
}
