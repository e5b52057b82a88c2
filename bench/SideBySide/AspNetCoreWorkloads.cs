using System.Diagnostics;
using System.Net;
using System.Text;
using GreenRuntime.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.SideBySide;

/// <summary>
/// ASP.NET Core three ways, the same app: an endpoint written the legacy way (a blocking 20 ms wait, or
/// <c>httpClient.GetStringAsync(upstream).Result</c> against an upstream that answers after 20 ms) then a small JSON
/// response, served by
/// <list type="bullet">
/// <item><c>plain</c>: Kestrel as it is, so each blocked request holds a thread-pool thread (what legacy code gets today);</item>
/// <item><c>greenlets</c>: Kestrel with <c>AddGreenlets()</c> + <c>UseGreenlets()</c>, the same blocking endpoint;</item>
/// <item><c>async</c>: Kestrel with the endpoint rewritten async (<c>await Task.Delay(20)</c>, <c>await GetStringAsync</c>),
/// the rewrite the middleware saves;</item>
/// </list>
/// plus a non-blocking "hello" endpoint to price the middleware itself. Every server answers <c>GET /bench</c> (what the
/// neutral load client sends) with the chosen endpoint, prints READY, and exits on its own after <see cref="Lifetime"/>.
/// These processes never run on a hub of their own: Kestrel's threads are plain thread-pool threads.
/// </summary>
internal static class AspNetCoreWorkloads
{
    public const int WaitMs = 20;
    private static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(150);
    private static readonly byte[] Json = Encoding.UTF8.GetBytes("{\"ok\":true,\"waited_ms\":20,\"source\":\"a legacy endpoint\"}");
    private static readonly byte[] Hello = Encoding.UTF8.GetBytes("hello");

    /// <param name="port">where to listen (127.0.0.1)</param>
    /// <param name="way">plain, greenlets or async</param>
    /// <param name="endpoint">sleep, upstream or hello</param>
    /// <param name="upstreamPort">the upstream's port (the upstream endpoint only)</param>
    public static Dictionary<string, double> Server(int port, string way, string endpoint, int upstreamPort)
    {
        if (way is not ("plain" or "greenlets" or "async")) throw new ArgumentException($"unknown way '{way}'; use plain, greenlets or async");
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, port));
        builder.WebHost.UseSockets(o => o.Backlog = 2048); // 1,000 connections arrive at once
        if (way == "greenlets") builder.Services.AddGreenlets();
        var app = builder.Build();
        if (way == "greenlets") app.UseGreenlets();
        var upstream = new Uri($"http://127.0.0.1:{upstreamPort}/up");
        var http = new HttpClient();
        RequestDelegate handler = (endpoint, way) switch
        {
            ("hello", _) => ctx => Write(ctx, Hello, "text/plain"),
            ("sleep", "async") => async ctx =>
            {
                await Task.Delay(WaitMs);
                await Write(ctx, Json, "application/json");
            },
            ("sleep", _) => ctx =>
            {
                Thread.Sleep(WaitMs); // legacy: blocks the thread (or, under UseGreenlets, parks the greenlet)
                return Write(ctx, Json, "application/json");
            },
            ("upstream", "async") => async ctx =>
            {
                var text = await http.GetStringAsync(upstream);
                await Write(ctx, Json, "application/json", text.Length);
            },
            ("upstream", _) => ctx =>
            {
                var text = http.GetStringAsync(upstream).Result; // legacy sync-over-async
                return Write(ctx, Json, "application/json", text.Length);
            },
            _ => throw new ArgumentException($"unknown endpoint '{endpoint}'; use sleep, upstream or hello"),
        };
        app.Map("/bench", handler);
        app.Start();
        Console.WriteLine("READY");
        Console.Out.Flush();
        // Until SIGTERM (the host's console lifetime stops the app, then waits for Main to return) or the lifetime's end.
        app.Lifetime.ApplicationStopping.WaitHandle.WaitOne(Lifetime);
        return new();
    }

    private static Task Write(HttpContext ctx, byte[] body, string type, int _ = 0)
    {
        ctx.Response.ContentType = type;
        ctx.Response.ContentLength = body.Length; // the load client frames responses by Content-Length
        return ctx.Response.Body.WriteAsync(body).AsTask();
    }

    /// <summary>The upstream of the <c>upstream</c> endpoint: plain async Kestrel that answers after 20 ms.</summary>
    public static Dictionary<string, double> Upstream(int port)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, port));
        builder.WebHost.UseSockets(o => o.Backlog = 2048);
        var app = builder.Build();
        app.Map("/up", async ctx =>
        {
            await Task.Delay(WaitMs);
            await Write(ctx, Hello, "text/plain");
        });
        app.Start();
        Console.WriteLine("READY");
        Console.Out.Flush();
        // Until SIGTERM (the host's console lifetime stops the app, then waits for Main to return) or the lifetime's end.
        app.Lifetime.ApplicationStopping.WaitHandle.WaitOne(Lifetime);
        return new();
    }

    /// <summary>
    /// One measurement: the upstream (when the endpoint needs it) and the server each in a fresh process, then the
    /// neutral load client with <paramref name="connections"/> keep-alive connections, <paramref name="warmup"/> s
    /// unrecorded, <paramref name="seconds"/> s measured. A warm-up of 0 measures a cold process from its first request.
    /// </summary>
    public static Func<Anchors, ProcessResult> Measure(string way, string endpoint, int connections, double warmup, double seconds) => anchors =>
    {
        Process? upstream = null;
        int upstreamPort = 0;
        if (endpoint == "upstream")
        {
            upstreamPort = EchoWorkloads.FreePort();
            upstream = Harness.StartOurs($"aspnet_upstream {upstreamPort}");
            if (upstream == null) return new ProcessResult(-1, "", "the upstream did not print READY");
        }
        try
        {
            return Harness.WithServer(anchors, port => Harness.StartOurs($"aspnet_server {port} {way} {endpoint} {upstreamPort}"),
                (_, port) => Harness.RunOurs(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"load http {port} {connections} 1000000 {warmup} {seconds}")));
        }
        finally
        {
            if (upstream != null) Harness.Stop(upstream);
        }
    };
}
