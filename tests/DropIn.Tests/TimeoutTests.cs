using System.Diagnostics;
using GreenRuntime;
using MySqlConnector;
using Npgsql;
using StackExchange.Redis;

namespace DropIn.Tests;

/// <summary>
/// <see cref="Green.WithTimeout{T}(TimeSpan, Func{T}, T)"/> around a library call that waits in the server for
/// much longer than the timeout, in 30 greenlets at once: the drivers wrap the timeout raised in their socket
/// read (Npgsql: NpgsqlException ← IOException ← GreenTimeoutException; MySqlConnector: MySqlException ←
/// GreenTimeoutException), which must still count as the timeout, and the library must stay usable afterwards.
/// StackExchange.Redis waits in <c>Monitor.Wait</c> instead, which the timeout interrupts.
/// </summary>
public class TimeoutTests : DropInTest
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(300);

    // The server-side wait each call would make without the timeout.
    private const int LongWaitSeconds = 5;

    private static void AssertTimedOutTogether(string what, Func<int, string> call, Func<string> after)
    {
        // Warm-up (JIT) outside the measurement, as in RunConcurrently.
        Assert.That(after(), Is.EqualTo("42"));
        var watch = Stopwatch.StartNew();
        var greenlets = Enumerable.Range(0, Greenlets)
            .Select(i => Green.Spawn(() => Green.WithTimeout(Timeout, () => call(i), "timed out")))
            .ToList();
        Green.JoinAll(greenlets, raiseError: true);
        var wall = watch.Elapsed;
        TestContext.Out.WriteLine($"{what}: {Greenlets} calls of {LongWaitSeconds} s under a {Timeout.TotalMilliseconds:F0} ms timeout ended after {wall.TotalMilliseconds:F0} ms");
        Assert.That(greenlets.Select(g => g.Value), Has.All.EqualTo("timed out"));
        // Each timeout ends its call at about 300 ms; far below the 5 s the server would take.
        Assert.That(wall, Is.LessThan(TimeSpan.FromSeconds(LongWaitSeconds / 2.0)));
        Assert.That(after(), Is.EqualTo("42"), $"{what} is not usable after the timeouts");
    }

    [Test]
    public void NpgsqlQueriesEndAtTheTimeoutAndThePoolStaysUsable()
    {
        var connectionString = Servers.Postgres;
        string Scalar(string sql)
        {
            using var connection = new NpgsqlConnection(connectionString);
            connection.Open();
            using var command = new NpgsqlCommand(sql, connection);
            return Convert.ToString(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture)!;
        }
        Servers.Connect("PostgreSQL", () => Scalar("SELECT 1"));
        AssertTimedOutTogether("Npgsql", _ => Scalar($"SELECT pg_sleep({LongWaitSeconds})"), () => Scalar("SELECT 42"));
    }

    [Test]
    public void MySqlConnectorQueriesEndAtTheTimeoutAndThePoolStaysUsable()
    {
        var connectionString = Servers.MySql;
        string Scalar(string sql)
        {
            using var connection = new MySqlConnection(connectionString);
            connection.Open();
            using var command = new MySqlCommand(sql, connection);
            return Convert.ToString(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture)!;
        }
        Servers.Connect("MariaDB", () => Scalar("SELECT 1"));
        AssertTimedOutTogether("MySqlConnector", _ => Scalar($"SELECT SLEEP({LongWaitSeconds})"), () => Scalar("SELECT 42"));
    }

    /// <summary>
    /// A StackExchange.Redis sync call waits in <c>Monitor.Wait</c> (with the baton released) for its reader
    /// thread to complete the reply; the greenlet timeout interrupts that wait, in 30 greenlets at once, and the
    /// multiplexers stay usable (the abandoned replies are completed into nothing when they arrive).
    /// </summary>
    [Test]
    public void RedisSyncCallsEndAtTheTimeoutAndTheMultiplexerStaysUsable()
    {
        var configuration = Servers.Redis;
        using var shared = Servers.Connect("Redis", () => ConnectionMultiplexer.Connect(configuration));
        var prefix = $"dropin:{Guid.NewGuid():N}";
        var connections = Enumerable.Range(0, Greenlets).Select(_ => ConnectionMultiplexer.Connect(configuration)).ToList();
        try
        {
            // Each BLPOP would wait 5 s in the server (its own connection: a blocking command holds it).
            AssertTimedOutTogether("StackExchange.Redis",
                i => (string?)connections[i].GetDatabase().Execute("BLPOP", $"{prefix}:{i}", LongWaitSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)) ?? "nil",
                () => (string)shared.GetDatabase().Execute("ECHO", "42")!);
            // A popper whose call was abandoned still gets its reply later; the connection answers after it.
            Assert.That((string?)connections[0].GetDatabase().Execute("ECHO", "again"), Is.EqualTo("again"));
        }
        finally
        {
            foreach (var c in connections) c.Dispose();
        }
    }
}
