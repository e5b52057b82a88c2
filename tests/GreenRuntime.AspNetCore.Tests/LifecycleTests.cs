using GreenRuntime.LowLevel;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace GreenRuntime.AspNetCore.Tests;

/// <summary>How a request's greenlet ends: aborted, failed, or at the host's shutdown.</summary>
[TestFixture]
public sealed class LifecycleTests
{
    [Test]
    public async Task RequestAbortedKillsTheRequestsGreenlet()
    {
        var started = new TaskCompletionSource<Greenlet>(TaskCreationOptions.RunContinuationsAsynchronously);
        var killed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/forever", () =>
        {
            started.TrySetResult(Green.Current);
            try
            {
                Thread.Sleep(TimeSpan.FromSeconds(60));
            }
            catch (GreenletExit)
            {
                killed.TrySetResult();
                throw;
            }
            return "not killed";
        }), configure: o => o.KillAbortedRequests = true);
        using var cancel = new CancellationTokenSource();
        var request = app.Client.GetAsync("/forever", cancel.Token);
        var greenlet = await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        cancel.Cancel(); // the client goes away: Kestrel signals RequestAborted
        Assert.That(async () => await request, Throws.InstanceOf<OperationCanceledException>());
        await killed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        for (int i = 0; i < 200 && !greenlet.Dead; i++) await Task.Delay(50);
        Assert.That(greenlet.Dead, Is.True, "the request's greenlet ended");
        // The hubs go on serving.
        Assert.That((await app.Client.GetAsync("/missing")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
    }

    [Test]
    public async Task ByDefaultAnAbortedRequestRunsToItsEndAsOnPlainKestrel()
    {
        // A kill would interrupt whatever the endpoint waits in, a database pool's queue among them (see
        // GreenletsOptions.KillAbortedRequests): by default the client's abort only signals RequestAborted.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ended = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/slow", (HttpContext context) =>
        {
            started.TrySetResult();
            try
            {
                using var wake = new ManualResetEventSlim();
                while (!context.RequestAborted.IsCancellationRequested) Thread.Sleep(20); // blocking, cooperative
                wake.Wait(300); // a wait after the abort, as a pool's queue would be
                Thread.Sleep(50);
                ended.TrySetResult("ran to its end");
            }
            catch (Exception e)
            {
                ended.TrySetResult(e.GetType().Name);
                throw;
            }
            return "late";
        }));
        using var cancel = new CancellationTokenSource();
        var request = app.Client.GetAsync("/slow", cancel.Token);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        cancel.Cancel();
        Assert.That(async () => await request, Throws.InstanceOf<OperationCanceledException>());
        Assert.That(await ended.Task.WaitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo("ran to its end"));
        Assert.That((await app.Client.GetAsync("/missing")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
    }

    [Test]
    public async Task AnEndpointThatAbortsItsOwnRequestRunsOnAsWithoutTheMiddleware()
    {
        // HttpContext.Abort() by the app (reject, quota exceeded) drops the connection; the code after it (an audit
        // record, a cleanup) must still run, as it does on plain Kestrel. Only a client that goes away kills.
        var after = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/reject", (HttpContext context) =>
        {
            context.Abort();
            try
            {
                Thread.Sleep(50); // blocking calls after the abort: cooperative, not killed
                Thread.Sleep(50);
                after.TrySetResult("ran on");
            }
            catch (Exception e)
            {
                after.TrySetResult(e.GetType().Name);
            }
        }), configure: o => o.KillAbortedRequests = true);
        Assert.That(async () => await app.Client.GetAsync("/reject"), Throws.InstanceOf<HttpRequestException>());
        Assert.That(await after.Task.WaitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo("ran on"));
        Assert.That((await app.Client.GetAsync("/missing")).StatusCode, Is.EqualTo(HttpStatusCode.NotFound));
    }

    [Test]
    public async Task AnAbortedAsyncEndpointResumesFromItsCancelledAwaitAndRunsItsFinallyBlocks()
    {
        // The endpoint's await is cancelled by RequestAborted, whose callbacks run before the middleware's abort: the
        // continuation reaches the hub just ahead of the kill. It must still run (a permit released in a finally block,
        // a pooled connection given back), or every aborted request leaks what it held.
        int started = 0, finallies = 0;
        using var permits = new SemaphoreSlim(1, 1);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/wait", async (HttpContext ctx) =>
        {
            await permits.WaitAsync(ctx.RequestAborted);
            try
            {
                Interlocked.Increment(ref started);
                await Task.Delay(Timeout.Infinite, ctx.RequestAborted);
            }
            finally
            {
                permits.Release();
                Interlocked.Increment(ref finallies);
            }
        }), configure: o => { o.Hubs = 1; o.KillAbortedRequests = true; });
        for (int round = 1; round <= 10; round++)
        {
            using var cancel = new CancellationTokenSource();
            var request = app.Client.GetAsync("/wait", cancel.Token);
            for (int i = 0; i < 600 && Volatile.Read(ref started) < round; i++) await Task.Delay(50);
            Assert.That(Volatile.Read(ref started), Is.EqualTo(round), $"round {round}: the endpoint started (its permit was given back)");
            cancel.Cancel();
            Assert.That(async () => await request, Throws.InstanceOf<OperationCanceledException>());
            for (int i = 0; i < 200 && Volatile.Read(ref finallies) < round; i++) await Task.Delay(50);
            Assert.That(Volatile.Read(ref finallies), Is.EqualTo(round), $"round {round}: the endpoint's finally block ran");
        }
    }

    [Test]
    public async Task AnAbortedRequestEndsOnlyWhenItsAsyncPipelineHasEnded()
    {
        // Without the middleware Kestrel waits for the pipeline's Task, aborted or not: code before UseGreenlets must not
        // go on (and the request's HttpContext must not be recycled) while the endpoint still runs on the hub.
        var inEndpoint = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var endpointEnded = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var returned = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/gated", async (HttpContext ctx) =>
        {
            inEndpoint.TrySetResult();
            await gate.Task; // does not watch RequestAborted
            endpointEnded.TrySetResult(ctx.Request.Path.Value ?? "");
        }), before: a => a.Use(async (ctx, next) =>
        {
            await next(ctx);
            if (ctx.Request.Path == "/gated") returned.TrySetResult(endpointEnded.Task.IsCompleted);
        }), configure: o => o.KillAbortedRequests = true);
        using var cancel = new CancellationTokenSource();
        var request = app.Client.GetAsync("/gated", cancel.Token);
        await inEndpoint.Task.WaitAsync(TimeSpan.FromSeconds(30));
        cancel.Cancel();
        Assert.That(async () => await request, Throws.InstanceOf<OperationCanceledException>());
        await Task.Delay(500); // the abort reaches the hub meanwhile
        Assert.That(returned.Task.IsCompleted, Is.False, "the middleware returned while the endpoint was still awaiting");
        gate.SetResult();
        Assert.That(await endpointEnded.Task.WaitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo("/gated"));
        Assert.That(await returned.Task.WaitAsync(TimeSpan.FromSeconds(30)), Is.True, "the middleware returned after the endpoint ended");
    }

    [Test]
    public async Task ARequestArrivingOnAThreadWithAHubOfItsOwnStillGetsAGreenletOfTheHost()
    {
        // Code that once called Green.* on a pool thread leaves that thread a hub of its own; requests Kestrel later
        // serves on that thread must still run on the host's hubs.
        await using var app = await TestApp.StartAsync(a => a.MapGet("/where", (HubGroup group) =>
                Parking.CurrentHub is { } hub && group.Hubs.Contains(hub) ? "host" : "elsewhere"),
            before: a => a.Use((ctx, next) =>
            {
                using var own = new Hub(); // this thread's own hub while the rest of the pipeline is entered
                return next(ctx);
            }));
        Assert.That(await app.Client.GetStringAsync("/where"), Is.EqualTo("host"));
    }

    [Test]
    public async Task ARequestAbortedBeforeItsGreenletRanNeverRunsAndStillEnds()
    {
        var hogging = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var victimEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool victimRan = false;
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/hog", () =>
            {
                hogging.TrySetResult();
                // Holds the one hub without yielding (busy work is not a wait): greenlets placed meanwhile stay unstarted.
                var clock = System.Diagnostics.Stopwatch.StartNew();
                while (clock.ElapsedMilliseconds < 1500) Thread.SpinWait(1000);
                return "hogged";
            });
            a.MapGet("/victim", () =>
            {
                victimRan = true;
                return "ran";
            });
        }, configure: o => { o.Hubs = 1; o.KillAbortedRequests = true; }, before: a => a.Use(async (ctx, next) =>
        {
            await next(ctx);
            if (ctx.Request.Path == "/victim") victimEnded.TrySetResult();
        }));
        var hog = app.Client.GetStringAsync("/hog");
        await hogging.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        Assert.That(async () => await app.Client.GetAsync("/victim", cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(await hog, Is.EqualTo("hogged"));
        // Its abort reached the hub before its start could run: the greenlet was killed unstarted, and the middleware's
        // Task still completed.
        await victimEnded.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(victimRan, Is.False);
    }

    [Test]
    public async Task AnExceptionInTheEndpointBecomesA500AndTheHubServesOn()
    {
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/fail", string () => throw new InvalidOperationException("broken endpoint"));
            a.MapGet("/fail-after-await", async Task<string> () =>
            {
                await Task.Delay(5);
                Thread.Sleep(5);
                throw new InvalidOperationException("broken after an await");
            });
            a.MapGet("/ok", () => { Thread.Sleep(10); return "ok"; });
        }, configure: o => o.Hubs = 1);
        for (int i = 0; i < 20; i++)
        {
            Assert.That((await app.Client.GetAsync("/fail")).StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That((await app.Client.GetAsync("/fail-after-await")).StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
            Assert.That(await app.Client.GetStringAsync("/ok"), Is.EqualTo("ok"));
        }
        var hub = app.Group.Hubs[0];
        Assert.That(hub.IsDisposed, Is.False);
        Assert.That(hub.GetRunInfo().Greenlets.Count(g => g.Name == "aspnetcore request"), Is.Zero, "no request greenlet is left behind");
    }

    /// <summary>A GreenletExit that is not this request's kill is an endpoint failure like any other: a Lazy whose factory
    /// was killed in an earlier request rethrows that GreenletExit to every later one, which came back as empty 200s.</summary>
    [Test]
    public async Task AGreenletExitThatIsNotTheRequestsOwnKillBecomesA500()
    {
        var cached = new GreenletExit(); // as a Lazy<T> caches the kill of the request that ran its factory
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/rethrow", string () => throw cached);
            a.MapGet("/rethrow-after-await", async Task<string> () =>
            {
                await Task.Delay(5);
                throw cached;
            });
        }, configure: o => o.Hubs = 1);
        Assert.That((await app.Client.GetAsync("/rethrow")).StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
        Assert.That((await app.Client.GetAsync("/rethrow-after-await")).StatusCode, Is.EqualTo(HttpStatusCode.InternalServerError));
    }

    [Test]
    public async Task ExceptionsReachTheMiddlewareBeforeUseGreenletsUnchanged()
    {
        Exception? seen = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/fail", string () => throw new FormatException("the original")),
            before: a => a.Use(async (ctx, next) =>
            {
                try
                {
                    await next(ctx);
                }
                catch (Exception e)
                {
                    seen = e;
                    ctx.Response.StatusCode = 418;
                }
            }));
        Assert.That((await app.Client.GetAsync("/fail")).StatusCode, Is.EqualTo((HttpStatusCode)418));
        Assert.That(seen, Is.TypeOf<FormatException>().With.Message.EqualTo("the original"));
    }

    [Test]
    public async Task PipelinedRequestsEachGetAGreenletOfTheirOwn()
    {
        // Kestrel reads the second request of one write synchronously, in the continuation that runs when the first
        // request's greenlet ends: that must not count as "already in a greenlet".
        await using var app = await TestApp.StartAsync(a => a.MapGet("/who/{n}", (string n) =>
            $"who={n}:{Green.Current.Id}:{Green.Current.Name}:{SynchronizationContext.Current?.GetType().Name};"));
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(app.Client.BaseAddress!.Host, app.Client.BaseAddress.Port);
        var requests = string.Concat(Enumerable.Range(1, 3).Select(n => $"GET /who/{n} HTTP/1.1\r\nHost: x\r\n\r\n"));
        await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes(requests + "GET /who/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        int n;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0) received.Write(buffer, 0, n);
        var text = System.Text.Encoding.ASCII.GetString(received.ToArray());
        var answers = System.Text.RegularExpressions.Regex.Matches(text, @"who=(\d):(\d+):([^:;]*):([^;]*);").Select(m => m.Groups).ToList();
        Assert.That(answers.Select(g => g[1].Value), Is.EqualTo(new[] { "1", "2", "3", "4" }), text);
        Assert.That(answers.Select(g => g[2].Value).Distinct().Count(), Is.EqualTo(4), "a greenlet each: " + text);
        Assert.That(answers.Select(g => g[3].Value), Has.All.EqualTo("aspnetcore request"), text);
        Assert.That(answers.Select(g => g[4].Value), Has.All.EqualTo("RequestSynchronizationContext"), text);
    }

    [Test]
    public async Task ACancellationReachesTheMiddlewareBeforeUseGreenletsAsTheSameExceptionAndACancelledTask()
    {
        var thrown = new OperationCanceledException("the endpoint's own");
        Exception? seen = null;
        bool? cancelled = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/cancel", async Task<string> () =>
            {
                await Task.Yield(); // the pipeline's Task ends cancelled, after an await
                throw thrown;
            }),
            before: a => a.Use(async (ctx, next) =>
            {
                var inner = next(ctx);
                try
                {
                    await inner;
                }
                catch (Exception e)
                {
                    seen = e;
                    cancelled = inner.IsCanceled;
                    ctx.Response.StatusCode = 418;
                }
            }));
        Assert.That((await app.Client.GetAsync("/cancel")).StatusCode, Is.EqualTo((HttpStatusCode)418));
        Assert.That(seen, Is.SameAs(thrown), "the endpoint's exception itself, as without the middleware");
        Assert.That(cancelled, Is.True);
    }

    [Test]
    public async Task GracefulShutdownWaitsForRequestsInFlight()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool? groupDisposedWhileRunning = null;
        var app = await TestApp.StartAsync(a => a.MapGet("/slow", (HubGroup group) =>
        {
            started.TrySetResult();
            Thread.Sleep(1000);
            groupDisposedWhileRunning = group.IsDisposed;
            return "finished";
        }));
        var group = app.Group;
        var request = app.Client.GetStringAsync("/slow");
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await app.App.StopAsync();   // Kestrel's graceful stop: waits for the request
        await app.App.DisposeAsync(); // then the container disposes the integration, then the group
        Assert.That(await request, Is.EqualTo("finished"));
        Assert.That(groupDisposedWhileRunning, Is.False);
        Assert.That(group.IsDisposed, Is.True, "the host owns the group and stops it");
        app.Client.Dispose();
    }

    [Test]
    public async Task DisposingTheHostWaitsForRequestsStillInGreenlets()
    {
        // The test server does not drain requests when it stops: the integration's own wait does.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool finished = false;
        var app = await TestApp.StartAsync(a => a.MapGet("/slow", () =>
        {
            started.TrySetResult();
            Thread.Sleep(800);
            Volatile.Write(ref finished, true);
            return "finished";
        }), kestrel: false);
        var group = app.Group;
        var request = app.Client.GetStringAsync("/slow");
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await app.App.DisposeAsync();
        Assert.That(Volatile.Read(ref finished), Is.True, "the host's disposal returned only after the request's greenlet finished");
        Assert.That(group.IsDisposed, Is.True);
        Assert.That(await request, Is.EqualTo("finished"));
        app.Client.Dispose();
    }

    [Test]
    public void UseGreenletsWithoutAddGreenletsSaysWhatToDo()
    {
        var builder = WebApplication.CreateBuilder();
        var app = builder.Build();
        Assert.That(() => app.UseGreenlets(), Throws.InvalidOperationException.With.Message.Contains("AddGreenlets()"));
    }

    [Test]
    public void InvalidOptionsAreRefusedWithTheirName()
    {
        var builder = WebApplication.CreateBuilder();
        builder.Services.AddGreenlets(o => o.MaxConcurrentRequests = -1);
        var app = builder.Build();
        Assert.That(() => app.UseGreenlets(), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("MaxConcurrentRequests"));
    }

    [Test]
    public async Task PrestartCarriersReachesEveryHubAndIsRefusedNegative()
    {
        // The endpoint reads its hub's run info: the carriers of the process's pool, made when the host created its hubs.
        await using (var app = await TestApp.StartAsync(a => a.MapGet("/", () => Hub.Current.GetRunInfo().Carriers.Threads.ToString()),
            configure: o => { o.Hubs = 2; o.PrestartCarriers = 24; }))
        {
            Assert.That(app.Group.Hubs.Select(h => h.Options.PrestartCarriers), Is.All.EqualTo(24));
            Assert.That(int.Parse(await app.Client.GetStringAsync("/")), Is.GreaterThanOrEqualTo(24));
        }
        var builder = WebApplication.CreateBuilder();
        builder.Services.AddGreenlets(o => o.PrestartCarriers = -1);
        var refused = builder.Build();
        Assert.That(() => refused.UseGreenlets(), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("PrestartCarriers"));
    }

    [Test]
    public async Task TheHostPatchesOnceAndLogsTheReport()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", () => "x"));
        Assert.That(GreenletsHost.PatchReport, Is.Not.Null);
        Assert.That(Patch.IsPatched(typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!), Is.True);
        // Off a greenlet (here: the test's own thread-pool thread) a patched call is the original.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Thread.Sleep(50);
        Assert.That(clock.ElapsedMilliseconds, Is.GreaterThanOrEqualTo(45));
        Assert.That(GreenRuntime.LowLevel.Parking.CurrentHub, Is.Null);
    }
}
