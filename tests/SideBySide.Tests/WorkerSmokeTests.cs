namespace GreenRuntime.SideBySide.Tests;

/// <summary>
/// Smoke test of bench/SideBySide's GreenRuntime workers: each runs with tiny sizes through the harness's own code
/// path (a child process in worker mode, one JSON line, <see cref="Harness.ParseJson"/>). Not a benchmark: the
/// assertions are about well-formed, self-consistent figures — counts that match the sizes asked for, rates that
/// agree with count and time — never about speed. Needs neither gevent nor Go.
/// </summary>
[TestFixture]
public class WorkerSmokeTests
{
    /// <summary>Runs one worker the way the harness does and returns its figures; fails with the worker's stderr.</summary>
    internal static Dictionary<string, double> Run(string workload)
    {
        var run = Harness.RunOurs(workload);
        Assert.That(run.ExitCode, Is.EqualTo(0), () => $"worker '{workload}' failed: {run.Error}");
        var figures = Harness.ParseJson(run);
        Assert.That(figures, Is.Not.Null, () => $"worker '{workload}' printed no JSON line: {run.Output}");
        return figures!;
    }

    [TestCase("switch_stackless", "switches_per_s")]
    [TestCase("switch_stackful", "switches_per_s")]
    [TestCase("spawn_join", "greenlets_per_s")]
    public void RateWorkerReportsARateThatMatchesItsCountAndTime(string workload, string rate)
    {
        var figures = Run($"{workload} 1000");

        Assert.That(figures["seconds"], Is.GreaterThan(0));
        Assert.That(figures[rate] * figures["seconds"], Is.EqualTo(1000).Within(0.1).Percent, "rate × seconds is the size asked for");
    }

    [Test]
    public void PrestartedSleepersMakeTheirCarriersBeforeTheClockStarts()
    {
        var figures = Run("sleepers_stackful_prestarted 300");

        Assert.That(figures["failed"], Is.Zero);
        Assert.That(figures["threads_created"], Is.Zero, "300 sleepers fit in the 2,000 carriers made by the hub's constructor");
        Assert.That(figures["hub_start_s"], Is.GreaterThan(0));
    }

    [Test]
    public void ContendedSleepersRunBesideOneBusyThreadPerCpuAndAllFinish()
    {
        var figures = Run("sleepers_stackful_warm_contended 200");

        Assert.That(figures["busy_threads"], Is.EqualTo(Environment.ProcessorCount));
        Assert.That(figures["failed"], Is.Zero);
        Assert.That(figures["wall_s"], Is.GreaterThanOrEqualTo(0.045), "the longest of the seeded 0–49 ms sleeps is waited for");
        Assert.That(figures["voluntary_switches_per_greenlet"], Is.GreaterThan(0), "sleeping greenlets hand the baton between threads");
    }

    [Test]
    public void TimersWorkerWaitsAtLeastTheLongestDelay()
    {
        var figures = Run("timers 200");

        Assert.That(figures["ideal_s"], Is.GreaterThan(0).And.LessThanOrEqualTo(0.1), "delays are drawn from 0–100 ms");
        Assert.That(figures["wall_s"], Is.GreaterThanOrEqualTo(figures["ideal_s"] * 0.99), "the workload ends after its longest timer");
        Assert.That(figures["lateness_ms_p99"], Is.GreaterThanOrEqualTo(figures["lateness_ms_p50"]));
    }

    [Test]
    public void EchoInProcessCountsEveryRoundTrip()
    {
        var figures = Run("echo_inproc 2 10");

        AssertEcho(figures, requests: 20);
    }

    [Test]
    public void TheInProcessEchoFloorMakesEveryRoundTrip()
    {
        var figures = Run("echo_inproc_floor 2 10");

        Assert.That(figures["requests"], Is.EqualTo(20));
        Assert.That(figures["req_per_s"], Is.GreaterThan(0));
        Assert.That(figures["us_per_round_trip"], Is.EqualTo(1e6 / figures["req_per_s"]).Within(1e-6).Percent);
    }

    [TestCase("")]
    [TestCase(" pinned")]
    public void TheWakeChainWakesEveryThreadOnce(string pinned)
    {
        var figures = Run($"wake_chain 50{pinned}");

        Assert.That(figures["threads"], Is.EqualTo(50));
        Assert.That(figures["pinned"], Is.EqualTo(pinned == "" ? 0 : 1));
        Assert.That(figures["chain_s"], Is.GreaterThan(0));
        Assert.That(figures["us_per_hop"], Is.EqualTo(figures["chain_s"] * 1e6 / 50).Within(1e-6).Percent);
    }

    [Test]
    public void EchoClientAgainstOurServerInAnotherProcessCountsEveryRoundTrip()
    {
        var run = Harness.WithServer(SweepSmokeTests.NoAnchors, port => Harness.StartOurs($"echo_server {port}"),
            (_, port) => Harness.RunOurs($"echo_client {port} 2 10"));
        var figures = Harness.ParseJson(run);

        Assert.That(figures, Is.Not.Null, () => $"the echo client failed: {run.Error}");
        AssertEcho(figures!, requests: 20);
    }

    [Test]
    public void AsyncEchoInProcessCountsEveryRoundTrip()
    {
        var figures = Run("echo_inproc_async 2 10");

        AssertEcho(figures, requests: 20);
        Assert.That(figures["ctxt_per_req"], Is.GreaterThanOrEqualTo(0));
    }

    [TestCase("echo_server_async")]
    [TestCase("echo_server_async_group")]
    public void AsyncEchoClientAgainstOurAsyncServerInAnotherProcessCountsEveryRoundTrip(string server)
    {
        var run = Harness.WithServer(SweepSmokeTests.NoAnchors, port => Harness.StartOurs($"{server} {port}"),
            (_, port) => Harness.RunOurs($"echo_client_async {port} 2 10"));
        var figures = Harness.ParseJson(run);

        Assert.That(figures, Is.Not.Null, () => $"the async echo client failed: {run.Error}");
        AssertEcho(figures!, requests: 20);
    }

    [Test]
    public void IdleClientKeepsItsIdleConnectionsAnsweringWhileOthersRequest()
    {
        var run = Harness.WithServer(SweepSmokeTests.NoAnchors, port => Harness.StartOurs($"http_server {port}"),
            (_, port) => Harness.RunOurs($"idle_client {port} 20 4 0.5 0.2"));
        var figures = Harness.ParseJson(run);

        Assert.That(figures, Is.Not.Null, () => $"the idle client failed: {run.Error}");
        Assert.That(figures!["idle_connections"], Is.EqualTo(20));
        Assert.That(figures["idle_still_answering"], Is.EqualTo(1), "every sampled idle connection answered again");
        Assert.That(figures["req_per_s"], Is.GreaterThan(0));
        Assert.That(figures["threads_under_load"], Is.GreaterThanOrEqualTo(figures["threads_idle"]).Or.GreaterThan(0));
        Assert.That(figures.ContainsKey("managed_kib_per_idle_conn"), "our server reports its managed heap");
    }

    private static void AssertEcho(Dictionary<string, double> figures, int requests)
    {
        Assert.That(figures["requests"], Is.EqualTo(requests));
        Assert.That(figures["req_per_s"] * figures["seconds"], Is.EqualTo(requests).Within(0.1).Percent);
        Assert.That(figures["p50_us"], Is.GreaterThan(0));
        Assert.That(figures["p90_us"], Is.GreaterThanOrEqualTo(figures["p50_us"]));
        Assert.That(figures["p99_us"], Is.GreaterThanOrEqualTo(figures["p90_us"]));
        Assert.That(figures["p999_us"], Is.GreaterThanOrEqualTo(figures["p99_us"]));
        Assert.That(figures["max_us"], Is.GreaterThanOrEqualTo(figures["p999_us"]));
    }

    [TestCase("greenlets", "sleep")]
    [TestCase("plain", "hello")]
    [TestCase("async", "upstream")]
    [TestCase("greenlets", "upstream")]
    public void AspNetCoreServerAnswersTheLoadClient(string way, string endpoint)
    {
        // The harness's own path: the upstream (when needed) and the server in child processes, 4 connections for 1 s.
        var run = AspNetCoreWorkloads.Measure(way, endpoint, connections: 4, warmup: 0, seconds: 1)(SweepSmokeTests.NoAnchors);
        var figures = Harness.ParseJson(run);

        Assert.That(figures, Is.Not.Null, () => $"the ASP.NET Core {way}/{endpoint} run failed: {run.Error}");
        Assert.That(figures!["errors"], Is.Zero);
        Assert.That(figures["requests"], Is.GreaterThan(0));
        if (endpoint != "hello")
            Assert.That(figures["p50_us"], Is.GreaterThanOrEqualTo(AspNetCoreWorkloads.WaitMs * 1000 * 0.9), "each request waits its 20 ms");
    }
}
