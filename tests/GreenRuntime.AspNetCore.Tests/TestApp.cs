using System.Net;
using GreenRuntime.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.AspNetCore.Tests;

/// <summary>A host with AddGreenlets()/UseGreenlets(), on real Kestrel (loopback, port 0) or on the test server.</summary>
internal sealed class TestApp : IAsyncDisposable
{
    public required WebApplication App { get; init; }
    public required HttpClient Client { get; init; }

    /// <summary>What the app logged at Warning and above: written to the test's output when the app is disposed, so a
    /// failed test (a 500, say) shows the server-side exception behind it.</summary>
    private ServerLog Log { get; init; } = null!;

    public HubGroup Group => App.Services.GetRequiredService<HubGroup>();

    /// <param name="map">maps the endpoints (after UseGreenlets)</param>
    /// <param name="kestrel">real Kestrel on a loopback port; false: the in-memory test server</param>
    /// <param name="configure">changes the greenlet options (the tests use 2 hubs)</param>
    /// <param name="services">more services</param>
    /// <param name="before">middleware before UseGreenlets</param>
    /// <param name="kestrelOptions">Kestrel's options</param>
    public static async Task<TestApp> StartAsync(Action<WebApplication> map, bool kestrel = true, Action<GreenletsOptions>? configure = null,
        Action<IServiceCollection>? services = null, Action<WebApplication>? before = null,
        Action<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>? kestrelOptions = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        var log = new ServerLog();
        builder.Logging.AddProvider(log);
        if (kestrel)
            builder.WebHost.UseKestrel(k =>
            {
                k.Listen(IPAddress.Loopback, 0);
                kestrelOptions?.Invoke(k);
            });
        else builder.WebHost.UseTestServer();
        builder.Services.AddGreenlets(o =>
        {
            o.Hubs = 2;
            configure?.Invoke(o);
        });
        services?.Invoke(builder.Services);
        var app = builder.Build();
        before?.Invoke(app);
        app.UseGreenlets();
        map(app);
        await app.StartAsync();
        HttpClient client;
        if (kestrel)
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
            {
                BaseAddress = new Uri(address),
                Timeout = TimeSpan.FromSeconds(60),
            };
        }
        else
        {
            client = app.GetTestClient();
            client.Timeout = TimeSpan.FromSeconds(60);
        }
        return new TestApp { App = app, Client = client, Log = log };
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        foreach (var line in Log.Lines) await TestContext.Out.WriteLineAsync(line);
    }
}

/// <summary>Keeps the app's warnings and errors (with their exceptions) for the test's output.</summary>
internal sealed class ServerLog : ILoggerProvider
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _lines = new();

    public IEnumerable<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose() { }

    private sealed class Logger(ServerLog owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel) || owner._lines.Count >= 50) return;
            owner._lines.Enqueue($"server {logLevel} {category}: {formatter(state, exception)}{(exception == null ? "" : Environment.NewLine + exception)}");
        }
    }
}

/// <summary>Counts how many callers are inside a region at once, and the most there ever were.</summary>
internal sealed class Concurrency
{
    private int _now, _peak;

    public int Peak => Volatile.Read(ref _peak);

    public IDisposable Enter()
    {
        int now = Interlocked.Increment(ref _now);
        int peak;
        while (now > (peak = Volatile.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, now, peak) != peak) { }
        return new Exit(this);
    }

    private sealed class Exit(Concurrency owner) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref owner._now);
    }
}
