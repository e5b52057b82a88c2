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
    /// <summary>
    /// A blocking query, the shape of a synchronous database driver: take a pooled connection (or open one), send one
    /// line, read one line back, and give the connection back. Like ADO.NET's pooling, connections are kept open between
    /// queries: one new TCP connection per query would leave a socket in TIME_WAIT for each, and under load that runs
    /// the machine out of ephemeral ports.
    /// </summary>
    public static string Query(IPEndPoint database, string query)
    {
        var connection = DatabaseConnection.Rent(database);
        try
        {
            var row = connection.Query(query);
            DatabaseConnection.Return(connection);
            return row;
        }
        catch
        {
            connection.Dispose(); // a connection that failed mid-query is not reused
            throw;
        }
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

/// <summary>One open connection to the "database", pooled the legacy way: a stack behind a <c>lock</c>.</summary>
internal sealed class DatabaseConnection : IDisposable
{
    private static readonly Stack<DatabaseConnection> s_idle = new();
    private readonly IPEndPoint _database;
    private readonly TcpClient _client = new();
    private readonly StreamWriter _writer;
    private readonly StreamReader _reader;

    private DatabaseConnection(IPEndPoint database)
    {
        _database = database;
        _client.Connect(database);
        var stream = _client.GetStream();
        _writer = new StreamWriter(stream, Encoding.UTF8) { AutoFlush = true };
        _reader = new StreamReader(stream, Encoding.UTF8);
    }

    public static DatabaseConnection Rent(IPEndPoint database)
    {
        lock (s_idle)
        {
            while (s_idle.TryPop(out var idle))
            {
                if (idle._database.Equals(database)) return idle;
                idle.Dispose();
            }
        }
        return new DatabaseConnection(database);
    }

    public static void Return(DatabaseConnection connection)
    {
        lock (s_idle) s_idle.Push(connection);
    }

    public string Query(string query)
    {
        _writer.WriteLine(query);
        return _reader.ReadLine() ?? throw new IOException("the database closed the connection without answering");
    }

    public void Dispose() => _client.Dispose();
}
