using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AspNetCoreLegacy;

/// <summary>
/// Code written the legacy way, as it is found in old web apps: a synchronous "database driver" (a blocking socket
/// client), a retry with <c>Thread.Sleep</c>, and <c>HttpClient.Send</c>. Nothing here knows about greenlets.
/// </summary>
public static class LegacyOrders
{
    /// <summary>A blocking query: connect, send one line, read one line back (a synchronous database driver's shape).</summary>
    public static string Query(IPEndPoint database, string query)
    {
        using var client = new TcpClient();
        client.Connect(database);
        using var stream = client.GetStream();
        using var writer = new StreamWriter(stream, Encoding.UTF8) { AutoFlush = true };
        using var reader = new StreamReader(stream, Encoding.UTF8);
        writer.WriteLine(query);
        return reader.ReadLine() ?? throw new IOException("the database closed the connection without answering");
    }

    /// <summary>A synchronous HTTP call with a retry loop that sleeps between attempts.</summary>
    public static string GetPrice(HttpClient http, Uri upstream, int orderId)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                using var response = http.Send(new HttpRequestMessage(HttpMethod.Get, new Uri(upstream, $"price/{orderId}")));
                response.EnsureSuccessStatusCode();
                using var reader = new StreamReader(response.Content.ReadAsStream());
                return reader.ReadToEnd();
            }
            catch (HttpRequestException) when (attempt < 3)
            {
                Thread.Sleep(50 * attempt); // back off, the legacy way
            }
        }
    }
}
