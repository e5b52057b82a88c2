// The package smoke test: everything below uses the GreenRuntime packages only (no project reference), the way
// a user's application does. After Patch.All(), greenlets doing plain Thread.Sleep and a blocking TCP round
// trip on loopback must overlap: the wall time must be well below the sum of their waits. Then an ASP.NET Core
// app with AddGreenlets()/UseGreenlets() on Kestrel must overlap requests whose endpoint sleeps. Exit code 0 = passed.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using GreenRuntime;
using GreenRuntime.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

const int Sleepers = 8;
const int SleepMs = 500;
const int ServerDelayMs = 500;

// A hang (a wait the packages failed to make cooperative blocks the hub for good) must fail the run, not stall CI.
var watchdog = new Thread(() =>
{
    Thread.Sleep(TimeSpan.FromSeconds(60));
    Console.Error.WriteLine("FAILED: no result after 60 s (a blocking call held the hub)");
    Environment.Exit(2);
}) { IsBackground = true };
watchdog.Start();

var report = Patch.All();
Console.WriteLine($"Patch.All(): {report.Patched.Count} patched, {report.Refused.Count} refused");
if (report.Patched.Count == 0)
{
    Console.Error.WriteLine("FAILED: Patch.All() patched nothing");
    return 1;
}

using var listener = new TcpListener(IPAddress.Loopback, 0);
listener.Start();
var port = ((IPEndPoint)listener.LocalEndpoint).Port;
byte[] message = "hello, greenlets"u8.ToArray();

var clock = Stopwatch.StartNew();
var greenlets = new List<Greenlet>();
for (var i = 0; i < Sleepers; i++)
    greenlets.Add(Green.Spawn(() => Thread.Sleep(SleepMs)));

// The server: a blocking accept, a plain Thread.Sleep before answering, a blocking echo.
greenlets.Add(Green.Spawn(() =>
{
    using var conn = listener.AcceptSocket();
    var buffer = new byte[message.Length];
    var got = 0;
    while (got < buffer.Length)
    {
        var n = conn.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
        if (n == 0) throw new IOException("the client closed early");
        got += n;
    }
    Thread.Sleep(ServerDelayMs);
    conn.Send(buffer);
}));

// The client: a blocking connect, send and receive, waiting for the server's delayed answer.
var client = Green.Spawn(() =>
{
    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    socket.Connect(IPAddress.Loopback, port);
    socket.Send(message);
    var reply = new byte[message.Length];
    var got = 0;
    while (got < reply.Length)
    {
        var n = socket.Receive(reply, got, reply.Length - got, SocketFlags.None);
        if (n == 0) throw new IOException("the server closed early");
        got += n;
    }
    return reply;
});
greenlets.Add(client);

Green.JoinAll(greenlets);
var wall = clock.Elapsed;

var failed = greenlets.Where(g => g.Exception != null).ToList();
foreach (var g in failed)
    Console.Error.WriteLine($"FAILED: {g} raised {g.Exception}");
if (failed.Count > 0) return 1;

if (!client.Get().AsSpan().SequenceEqual(message))
{
    Console.Error.WriteLine("FAILED: the echo came back different");
    return 1;
}

// Run one after another, the waits would take the sum (sleepers, plus the server's delay, which the client
// waits through); overlapped, about the longest. Half the sum is a generous bound between the two.
var sum = TimeSpan.FromMilliseconds(Sleepers * SleepMs + 2 * ServerDelayMs);
Console.WriteLine($"{greenlets.Count} greenlets: wall {wall.TotalMilliseconds:F0} ms, sum of their waits {sum.TotalMilliseconds:F0} ms");
if (wall >= sum / 2)
{
    Console.Error.WriteLine("FAILED: the greenlets did not overlap");
    return 1;
}
// GreenRuntime.AspNetCore: 20 requests to an endpoint that sleeps 300 ms, from a thread-pool thread (the main
// thread is a hub's now). Overlapped they take about 0.3 s; one after another 6 s.
var web = Task.Run(async () =>
{
    var builder = WebApplication.CreateBuilder();
    builder.Logging.ClearProviders();
    builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
    builder.Services.AddGreenlets(o => o.Hubs = 1);
    await using var app = builder.Build();
    app.UseGreenlets();
    app.MapGet("/sleep", () => { Thread.Sleep(300); return GreenRuntime.LowLevel.Parking.CurrentHub != null ? "greenlet" : "thread"; });
    await app.StartAsync();
    var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    using var http = new HttpClient { BaseAddress = new Uri(address) };
    var webClock = Stopwatch.StartNew();
    var replies = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => http.GetStringAsync("/sleep")));
    var took = webClock.Elapsed;
    await app.StopAsync();
    return (replies, took);
});
web.Wait();
var (webReplies, webWall) = web.Result;
Console.WriteLine($"ASP.NET Core: 20 requests sleeping 300 ms each took {webWall.TotalMilliseconds:F0} ms");
if (webReplies.Any(r => r != "greenlet"))
{
    Console.Error.WriteLine("FAILED: an ASP.NET Core request did not run on a greenlet");
    return 1;
}
if (webWall >= TimeSpan.FromSeconds(3))
{
    Console.Error.WriteLine("FAILED: the ASP.NET Core requests did not overlap");
    return 1;
}
Console.WriteLine("package smoke test passed");
return 0;
