using System.Diagnostics;
using GreenRuntime;

// Shared by the test projects that measure the hub's responsiveness (linked into each: see their .csproj).

namespace GreenRuntime.TestSupport;

/// <summary>
/// A greenlet that sleeps 5 ms in a loop and records the longest gap between its wake-ups: how long the hub
/// went without running it. A library call that blocks holding the hub's baton shows up as a gap as long as
/// the call.
/// </summary>
internal sealed class Ticker
{
    private readonly Greenlet _greenlet;
    private volatile bool _stop;

    public Ticker()
    {
        _greenlet = Green.Spawn(() =>
        {
            var watch = Stopwatch.StartNew();
            var last = watch.Elapsed;
            while (!_stop)
            {
                Green.Sleep(5);
                var now = watch.Elapsed;
                if (now - last > LongestGap) LongestGap = now - last;
                last = now;
                Ticks++;
            }
        });
    }

    public TimeSpan LongestGap { get; private set; }

    public int Ticks { get; private set; }

    public void Stop()
    {
        _stop = true;
        _greenlet.Join();
    }
}
