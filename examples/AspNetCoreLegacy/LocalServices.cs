using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AspNetCoreLegacy;

/// <summary>
/// The slow services the legacy endpoint depends on, started in this process so that the example needs nothing else:
/// a line-based TCP "database" and an HTTP "pricing" upstream, each answering after 20 ms. Both are plain async code on
/// the thread pool (no greenlets), like a separate server would be.
/// </summary>
public sealed class LocalServices : IAsyncDisposable
{
    private const int DelayMs = 20;
    private readonly TcpListener _database;
    private readonly WebApplication _upstream;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;

    private LocalServices(TcpListener database, WebApplication upstream)
    {
        _database = database;
        _upstream = upstream;
        _accepting = AcceptAsync();
    }

    public IPEndPoint Database => (IPEndPoint)_database.LocalEndpoint;

    public Uri Upstream => new(_upstream.Urls.First() + "/");

    public static async Task<LocalServices> StartAsync()
    {
        var database = new TcpListener(IPAddress.Loopback, 0);
        database.Start(backlog: 1024);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var upstream = builder.Build();
        upstream.MapGet("/price/{id:int}", async (int id) =>
        {
            await Task.Delay(DelayMs);
            return $"{10 + id % 90}.99";
        });
        await upstream.StartAsync();
        return new LocalServices(database, upstream);
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _database.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = AnswerAsync(client);
        }
    }

    private async Task AnswerAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                using var reader = new StreamReader(stream, Encoding.UTF8);
                await using var writer = new StreamWriter(stream, Encoding.UTF8) { AutoFlush = true };
                // One answer per line, for as long as the client keeps the connection (drivers pool their connections).
                while (await reader.ReadLineAsync(_stop.Token) is { } query)
                {
                    await Task.Delay(DelayMs, _stop.Token);
                    await writer.WriteLineAsync($"row for '{query}'");
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // the client went away, or the example is stopping
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _database.Stop();
        await _accepting;
        await _upstream.StopAsync();
        await _upstream.DisposeAsync();
        _stop.Dispose();
    }
}
