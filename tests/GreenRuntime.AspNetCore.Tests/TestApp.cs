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
        return new TestApp { App = app, Client = client };
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
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
