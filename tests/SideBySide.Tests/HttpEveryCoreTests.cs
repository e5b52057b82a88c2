namespace GreenRuntime.SideBySide.Tests;

/// <summary>
/// The HTTP-on-every-core rows' own code: wrk's report parsed into the harness's figures, context switches read from
/// /proc, and the group server worker serving the load client. Not a benchmark: nothing here is about speed.
/// </summary>
[TestFixture]
public class HttpEveryCoreTests
{
    private const string WrkReport = """
        Running 10s test @ http://127.0.0.1:8080/
          2 threads and 1000 connections
          Thread Stats   Avg      Stdev     Max   +/- Stdev
            Latency    30.43ms    8.99ms   1.02s    92.10%
            Req/Sec    16.52k     2.01k   21.33k    71.00%
          Latency Distribution
             50%   27.10ms
             75%   31.02ms
             90%   37.87ms
             99%   77.40ms
          328770 requests in 10.01s, 70.55MB read
          Socket errors: connect 0, read 3, write 0, timeout 12
          Non-2xx or 3xx responses: 2
        Requests/sec:  32845.51
        Transfer/sec:      7.05MB
        """;

    [Test]
    public void WrkReportBecomesTheHarnessFigures()
    {
        var figures = HttpEveryCore.ParseWrk(WrkReport)!;

        Assert.That(figures["req_per_s"], Is.EqualTo(32845.51));
        Assert.That(figures["p50_us"], Is.EqualTo(27_100).Within(0.001));
        Assert.That(figures["p99_us"], Is.EqualTo(77_400).Within(0.001));
        Assert.That(figures["requests"], Is.EqualTo(328770));
        Assert.That(figures["errors"], Is.EqualTo(3 + 12 + 2), "socket errors and non-2xx responses");
        Assert.That(HttpEveryCore.ParseWrk("unable to connect to 127.0.0.1:1 Connection refused"), Is.Null);
    }

    [Test]
    public void ContextSwitchesOfAProcessSumItsThreads()
    {
        long before = HttpEveryCore.ContextSwitches(Environment.ProcessId);
        for (int i = 0; i < 20; i++) Thread.Sleep(1); // each sleep switches this thread out
        long after = HttpEveryCore.ContextSwitches(Environment.ProcessId);

        Assert.That(before, Is.GreaterThan(0));
        Assert.That(after, Is.GreaterThanOrEqualTo(before + 20));
    }

    [Test]
    public void TheGroupServerWorkerServesTheLoadClient()
    {
        var run = Harness.WithServer(SweepSmokeTests.NoAnchors, port => Harness.StartOurs($"http_server_hubs {port} 2 pinned"),
            (_, port) => Harness.RunOurs($"load http {port} 8 5 0 60"));
        var figures = Harness.ParseJson(run);

        Assert.That(figures, Is.Not.Null, () => $"the load client failed: {run.Error}");
        Assert.That(figures!["requests"], Is.EqualTo(40), "every request of the cap was answered");
        Assert.That(figures["errors"], Is.Zero);
        Assert.That(figures["p50_us"], Is.GreaterThanOrEqualTo(15_000), "the blocking handler's 20 ms sleep ran");
    }
}
