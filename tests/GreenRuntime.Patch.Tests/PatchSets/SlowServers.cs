using System.Net;
using System.Net.Sockets;
using System.Text;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Local servers that answer after a delay, run with async code on the thread pool (never on a hub), so the
/// code under test blocks on real sockets.
/// </summary>
internal sealed class SlowServer : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<NetworkStream, CancellationToken, Task> _serve;
    private int _connections;

    private SlowServer(Func<NetworkStream, CancellationToken, Task> serve)
    {
        _serve = serve;
        _listener.Start(512);
        _ = Task.Run(AcceptLoop);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Each connection: wait <paramref name="delay"/>, write <paramref name="line"/> + "\n", close.</summary>
    public static SlowServer Line(TimeSpan delay, string line = "hello") => new(async (stream, ct) =>
    {
        await Task.Delay(delay, ct);
        var bytes = Encoding.ASCII.GetBytes(line + "\n");
        await stream.WriteAsync(bytes, ct);
    });

    /// <summary>An HTTP/1.1 responder: reads the request head, waits <paramref name="delay"/>, answers <paramref name="body"/>, closes.</summary>
    public static SlowServer Http(TimeSpan delay, string body = "hello") => new((stream, ct) => AnswerHttp(stream, delay, body, ct));

    /// <summary>An HTTP/1.1 responder that never answers its first connection (it reads it until the client closes it) and
    /// answers every later one at once.</summary>
    public static SlowServer HttpFirstNeverAnswered(string body = "hello")
    {
        int connections = 0;
        return new(async (stream, ct) =>
        {
            if (Interlocked.Increment(ref connections) > 1)
            {
                await AnswerHttp(stream, TimeSpan.Zero, body, ct);
                return;
            }
            var buffer = new byte[4096];
            while (await stream.ReadAsync(buffer, ct) > 0) { }
        });
    }

    private static async Task AnswerHttp(NetworkStream stream, TimeSpan delay, string body, CancellationToken ct)
    {
        var head = new StringBuilder();
        var buffer = new byte[4096];
        while (!head.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(buffer, ct);
            if (n == 0) return;
            head.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        await Task.Delay(delay, ct);
        var response = $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(response), ct);
    }

    /// <summary>A minimal SMTP responder that accepts any message, pausing <paramref name="delay"/> before its greeting.</summary>
    public static SlowServer Smtp(TimeSpan delay) => new(async (stream, ct) =>
    {
        var reader = new StreamReader(stream, Encoding.ASCII);
        var writer = new StreamWriter(stream, Encoding.ASCII) { NewLine = "\r\n", AutoFlush = true };
        await Task.Delay(delay, ct);
        await writer.WriteLineAsync("220 localhost ESMTP test");
        bool inData = false;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (inData)
            {
                if (line == ".")
                {
                    inData = false;
                    await writer.WriteLineAsync("250 OK queued");
                }
                continue;
            }
            string verb = line.Split(' ')[0].ToUpperInvariant();
            switch (verb)
            {
                case "EHLO":
                case "HELO":
                    await writer.WriteLineAsync("250 localhost");
                    break;
                case "DATA":
                    inData = true;
                    await writer.WriteLineAsync("354 go ahead");
                    break;
                case "QUIT":
                    await writer.WriteLineAsync("221 bye");
                    return;
                default:
                    await writer.WriteLineAsync("250 OK");
                    break;
            }
        }
    });

    private async Task AcceptLoop()
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
            Interlocked.Increment(ref _connections);
            _ = Task.Run(async () =>
            {
                using (client)
                {
                    try
                    {
                        await _serve(client.GetStream(), _stop.Token);
                    }
                    catch (Exception)
                    {
                        // A client that went away: not the test's concern here.
                    }
                }
            });
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
    }
}
