// An ASP.NET Core minimal API whose endpoint is written the legacy way: a blocking "database" query over a socket,
// an HttpClient.Send with a Thread.Sleep retry. AddGreenlets() + UseGreenlets() run each request in a greenlet, and
// Patch.All() (done once, as UseGreenlets builds the pipeline) makes those blocking calls park the request's
// greenlet instead of a thread-pool thread, so 500 such requests at once finish in about the time of one.
//
//   dotnet run --project examples/AspNetCoreLegacy              serves on http://127.0.0.1:5080 after a self-test burst
//   dotnet run --project examples/AspNetCoreLegacy -- --once    the burst only, then exits
//   dotnet run --project examples/AspNetCoreLegacy -- --urls=http://127.0.0.1:8080    another address
using System.Diagnostics;
using AspNetCoreLegacy;
using GreenRuntime;
using GreenRuntime.AspNetCore;
using GreenRuntime.LowLevel;

bool once = args.Contains("--once");
await using var services = await LocalServices.StartAsync();

var builder = WebApplication.CreateBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
if (builder.Configuration["urls"] is null) builder.WebHost.UseUrls("http://127.0.0.1:5080"); // --urls overrides it
builder.Services.AddGreenlets();
builder.Services.AddSingleton(new HttpClient { Timeout = TimeSpan.FromSeconds(10) });
var app = builder.Build();

app.MapGet("/", () => "GET /orders/{id} runs blocking legacy code in a greenlet\n"); // before UseGreenlets: plain Kestrel
app.UseGreenlets();
app.MapGet("/orders/{id:int}", (int id, HttpClient http) =>
{
    var row = LegacyOrders.Query(services.Database, $"SELECT * FROM orders WHERE id = {id}"); // blocking socket I/O
    var price = LegacyOrders.GetPrice(http, services.Upstream, id);                          // HttpClient.Send
    Thread.Sleep(20);                                                                          // "rate limiting"
    return new { id, row, price, onGreenlet = Parking.CurrentHub != null };
});

await app.StartAsync();
Console.WriteLine($"Serving on {app.Urls.First()}; try: curl {app.Urls.First()}/orders/42");

// A self-test burst: each request blocks about 60 ms (20 ms database + 20 ms upstream + 20 ms sleep).
using (var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) })
{
    Console.WriteLine(await client.GetStringAsync("/orders/42"));
    const int burst = 500;
    var clock = Stopwatch.StartNew();
    var replies = await Task.WhenAll(Enumerable.Range(0, burst).Select(i => client.GetStringAsync($"/orders/{i}")));
    clock.Stop();
    int onGreenlets = replies.Count(r => r.Contains("\"onGreenlet\":true", StringComparison.Ordinal));
    Console.WriteLine($"{burst} concurrent requests, each blocking ~60 ms: {clock.Elapsed.TotalSeconds:F2} s " +
                      $"({onGreenlets} ran on greenlets; one after another they would take {burst * 0.06:F0} s).");
}

if (!once)
{
    Console.WriteLine("Press Ctrl+C to stop.");
    await app.WaitForShutdownAsync();
}
await app.StopAsync();
await app.DisposeAsync();
