using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Claims;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.AspNetCore.Tests;

/// <summary>The request's ambient state inside the greenlet is what it is without the middleware, and never leaks.</summary>
[TestFixture]
public sealed class IsolationTests
{
    private static readonly AsyncLocal<string?> s_requestId = new();

    [Test]
    public async Task AsyncLocalAndHttpContextAccessorBelongToTheirRequestAcrossAThousandRequests()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/whoami/{id}", async (string id, HttpContext ctx, IHttpContextAccessor accessor) =>
        {
            // Nothing of an earlier request on this carrier or hub is visible.
            if (s_requestId.Value != null) return $"leak: saw {s_requestId.Value}";
            s_requestId.Value = id;
            Thread.Sleep(Random.Shared.Next(3)); // other requests run on this hub meanwhile
            if (!ReferenceEquals(accessor.HttpContext, ctx)) return "accessor: another context before the await";
            await Task.Delay(1);
            Thread.Sleep(Random.Shared.Next(2));
            if (!ReferenceEquals(accessor.HttpContext, ctx)) return "accessor: another context after the await";
            return s_requestId.Value == id ? "ok" : $"mixed: {s_requestId.Value} in {id}";
        }), services: s => s.AddHttpContextAccessor());

        var ids = Enumerable.Range(0, 1000).Select(i => $"r{i}").ToArray();
        var results = new ConcurrentBag<string>();
        // 50 clients at a time, 1,000 requests in all.
        await Parallel.ForEachAsync(ids, new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (id, _) =>
            results.Add(await app.Client.GetStringAsync($"/whoami/{id}")));
        Assert.That(results, Has.Count.EqualTo(1000));
        Assert.That(results.Where(r => r != "ok").Distinct().Take(5), Is.Empty);
    }

    [Test]
    public async Task TheMiddlewareTouchesNothingOfTheHttpContextOnceTheRequestsGreenletRuns()
    {
        // HttpContext is not thread-safe (its feature cache races): once the greenlet runs the pipeline on a hub's thread,
        // the middleware on Kestrel's thread must be done with the context. The lifetime feature below waits, when read,
        // for the endpoint to be running, so a read that races with the greenlet is caught every time, not once in a while.
        using var endpointRunning = new ManualResetEventSlim();
        int readsWhileRunning = 0;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/owned", () =>
            {
                endpointRunning.Set();
                Thread.Sleep(1500);
                endpointRunning.Reset();
                return "ok";
            }),
            before: a => a.Use((ctx, next) =>
            {
                var lifetime = ctx.Features.Get<IHttpRequestLifetimeFeature>()!;
                ctx.Features.Set<IHttpRequestLifetimeFeature>(new WatchedLifetime(lifetime, () =>
                {
                    if (endpointRunning.Wait(TimeSpan.FromSeconds(1))) Interlocked.Increment(ref readsWhileRunning);
                }));
                return next(ctx);
            }));

        Assert.That(await app.Client.GetStringAsync("/owned"), Is.EqualTo("ok"));
        Assert.That(readsWhileRunning, Is.Zero, "the middleware read RequestAborted while the endpoint ran in its greenlet");
    }

    /// <summary>A request-lifetime feature that reports each read of <see cref="RequestAborted"/>.</summary>
    private sealed class WatchedLifetime(IHttpRequestLifetimeFeature inner, Action onRead) : IHttpRequestLifetimeFeature
    {
        public CancellationToken RequestAborted
        {
            get
            {
                onRead();
                return inner.RequestAborted;
            }
            set => inner.RequestAborted = value;
        }

        public void Abort() => inner.Abort();
    }

    [Test]
    public async Task ActivityLoggingScopeAndUserAreTheRequestsOwn()
    {
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Microsoft.AspNetCore",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        var scopes = new ScopeRecorder();
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/ambient/{id}", (string id, HttpContext ctx, ILogger<IsolationTests> logger) =>
            {
                Thread.Sleep(5);
                logger.LogInformation("inside {Id}", id);
                return $"{Activity.Current?.TraceId}|{ctx.User.Identity?.Name}|{scopes.ScopeOf(id)}";
            }),
            services: s => s.AddLogging(l => l.AddProvider(scopes)),
            before: a => a.Use(async (ctx, next) =>
            {
                ctx.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "user-" + ctx.Request.Path.Value!.Split('/')[2])], "test"));
                var logger = ctx.RequestServices.GetRequiredService<ILogger<IsolationTests>>();
                using (logger.BeginScope("scope-{Id}", ctx.Request.Path.Value!.Split('/')[2]))
                    await next(ctx);
            }));

        var checks = await Task.WhenAll(Enumerable.Range(0, 100).Select(async i =>
        {
            var traceId = ActivityTraceId.CreateRandom();
            using var request = new HttpRequestMessage(HttpMethod.Get, $"/ambient/{i}");
            request.Headers.Add("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom()}-01");
            using var response = await app.Client.SendAsync(request);
            return (Expected: $"{traceId}|user-{i}|scope-{i}", Actual: await response.Content.ReadAsStringAsync());
        }));
        foreach (var (expected, actual) in checks) Assert.That(actual, Is.EqualTo(expected));
    }

    /// <summary>Records, per message "inside {Id}", the scopes that were active when it was logged.</summary>
    private sealed class ScopeRecorder : ILoggerProvider, ISupportExternalScope
    {
        private readonly ConcurrentDictionary<string, string> _scopes = new();
        private IExternalScopeProvider _provider = new LoggerExternalScopeProvider();

        public string ScopeOf(string id) => _scopes.TryGetValue(id, out var s) ? s : "none";

        public ILogger CreateLogger(string categoryName) => new Recorder(this);

        public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _provider = scopeProvider;

        public void Dispose() { }

        private sealed class Recorder(ScopeRecorder owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => owner._provider.Push(state);

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                var message = formatter(state, exception);
                if (!message.StartsWith("inside ", StringComparison.Ordinal)) return;
                var found = new List<string>();
                owner._provider.ForEachScope((scope, list) => list.Add(scope?.ToString() ?? ""), found);
                owner._scopes[message["inside ".Length..]] = string.Join(",", found.Where(s => s.StartsWith("scope-", StringComparison.Ordinal)));
            }
        }
    }
}
