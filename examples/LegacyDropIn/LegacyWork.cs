using System.Net;
using System.Net.Sockets;
using System.Text;

namespace LegacyDropIn;

/// <summary>
/// Blocking code written with no knowledge of greenlets: downloads, a raw TCP exchange, a DNS lookup, a file
/// read and a sleep. Nothing here references GreenRuntime.
/// </summary>
public static class LegacyWork
{
    private static readonly HttpClient Http = new();

    /// <summary>One "job": every kind of blocking call, in sequence. Returns a short summary.</summary>
    public static string DoJob(int id, int httpPort, int tcpPort, string filePath)
    {
        var text = new StringBuilder();
        using (var web = new WebClient())
            text.Append(web.DownloadString($"http://127.0.0.1:{httpPort}/job/{id}").Length).Append(' ');
        using (var response = Http.Send(new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{httpPort}/sync/{id}")))
            text.Append((int)response.StatusCode).Append(' ');
        text.Append(Http.GetStringAsync($"http://127.0.0.1:{httpPort}/async/{id}").Result.Length).Append(' ');
        using (var client = new TcpClient("127.0.0.1", tcpPort))
        using (var reader = new StreamReader(client.GetStream()))
            text.Append(reader.ReadLine()).Append(' ');
        text.Append(Dns.GetHostEntry("localhost").AddressList.Length).Append(' ');
        text.Append(File.ReadAllBytes(filePath).Length).Append(' ');
        Thread.Sleep(200);
        return text.ToString();
    }

    /// <summary>The asyncio example of the seed, written with plain sleeps: three jobs of 3 s, 2 s and 2 s.</summary>
    public static string SleepJob(string name, int seconds)
    {
        Thread.Sleep(TimeSpan.FromSeconds(seconds));
        return $"{name} slept {seconds} s";
    }
}
