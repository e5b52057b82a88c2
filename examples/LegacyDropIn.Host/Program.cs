// Runs the unmodified LegacyDropIn library in 100 greenlets after Patch.All(), against local servers that
// answer after 200 ms, and compares with running a few jobs in sequence.
//
//   dotnet run --project examples/LegacyDropIn.Host -c Release [jobs=100]

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime;
using LegacyDropIn;

int jobs = args.Length > 0 ? int.Parse(args[0]) : 100;
var delay = TimeSpan.FromMilliseconds(200);

// Local servers on the thread pool (async code, no greenlets): each answer comes 200 ms after the request.
using var http = Serve(async (stream, ct) =>
{
    var buffer = new byte[4096];
    var head = new StringBuilder();
    while (!head.ToString().Contains("\r\n\r\n"))
    {
        int n = await stream.ReadAsync(buffer, ct);
        if (n == 0) return;
        head.Append(Encoding.ASCII.GetString(buffer, 0, n));
    }
    await Task.Delay(delay, ct);
    await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"), ct);
});
using var tcp = Serve(async (stream, ct) =>
{
    await Task.Delay(delay, ct);
    await stream.WriteAsync("pong\n"u8.ToArray(), ct);
});
var file = Path.Combine(Path.GetTempPath(), "legacy-drop-in.bin");
File.WriteAllBytes(file, new byte[4 << 20]);

var report = Patch.All();
Console.WriteLine($"Patch.All(): {report.Patched.Count} methods patched, {report.Refused.Count} refused (see Patch.Applied / report.Refused)");
// Only the refusals whose calls block the hub: the others are reached through a patched method anyway, or do not wait.
foreach (var refused in report.Refused.Where(r => r.LosesCooperation)) Console.WriteLine($"  not cooperative: {refused.Description}");

// Sequential baseline: a few jobs, extrapolated (running 100 in sequence would take minutes).
const int sample = 3;
var watch = Stopwatch.StartNew();
for (int i = 0; i < sample; i++) LegacyWork.DoJob(i, http.Port, tcp.Port, file);
var perJob = watch.Elapsed / sample;
Console.WriteLine($"sequential: {perJob.TotalMilliseconds:F0} ms per job -> ~{(perJob * jobs).TotalSeconds:F1} s for {jobs} jobs");

watch.Restart();
var greenlets = Enumerable.Range(0, jobs).Select(i => Green.Spawn(() => LegacyWork.DoJob(i, http.Port, tcp.Port, file))).ToList();
Green.JoinAll(greenlets, raiseError: true);
Console.WriteLine($"{jobs} greenlets: {watch.Elapsed.TotalSeconds:F2} s (first result: {greenlets[0].Value})");

// The seed's asyncio example, with plain Thread.Sleep: 3 s, 2 s and 2 s together take about 3 s.
watch.Restart();
var sleepers = new[] { ("A", 3), ("B", 2), ("C", 2) }.Select(j => Green.Spawn(() => LegacyWork.SleepJob(j.Item1, j.Item2))).ToList();
Green.JoinAll(sleepers);
foreach (var s in sleepers) Console.WriteLine($"  {s.Value}");
Console.WriteLine($"sleep jobs 3 s + 2 s + 2 s: {watch.Elapsed.TotalSeconds:F1} s");
File.Delete(file);

static Server Serve(Func<NetworkStream, CancellationToken, Task> handle) => new(handle);

/// <summary>A loopback TCP server running <c>handle</c> for each connection on the thread pool.</summary>
sealed class Server : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();

    public Server(Func<NetworkStream, CancellationToken, Task> handle)
    {
        _listener.Start(1024);
        _ = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient client;
                try
                {
                    client = await _listener.AcceptTcpClientAsync(_stop.Token);
                }
                catch (Exception)
                {
                    return;
                }
                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        try
                        {
                            await handle(client.GetStream(), _stop.Token);
                        }
                        catch (Exception)
                        {
                        }
                    }
                });
            }
        });
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
    }
}
