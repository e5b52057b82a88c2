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
    /// The limitation, pinned: a StackExchange.Redis sync call waits in <c>Monitor.Wait</c> with the baton
    /// released, and such a wait cannot be interrupted (its thread must come back with the monitor held), so a
    /// timeout or kill takes effect only when the reply arrives or the library's own <c>syncTimeout</c>
    /// expires. The other greenlets run meanwhile. Bound such calls with <c>syncTimeout</c> (and a server-side
    /// timeout, as BLPOP's here).
    /// </summary>
    [Test]
    public void ARedisSyncCallEndsAtItsReplyNotAtTheGreenletTimeout()
    {
        var configuration = Servers.Redis;
        using var connection = Servers.Connect("Redis", () => ConnectionMultiplexer.Connect(configuration));
        var key = $"dropin:{Guid.NewGuid():N}:empty";
        var ticker = new Ticker();
        var watch = Stopwatch.StartNew();
        var g = Green.Spawn(() => Green.WithTimeout(Timeout, () => (string?)connection.GetDatabase().Execute("BLPOP", key, "1") ?? "nil", "timed out"));
        var result = g.Get();
        var wall = watch.Elapsed;
        ticker.Stop();
        TestContext.Out.WriteLine($"StackExchange.Redis BLPOP 1 s under a {Timeout.TotalMilliseconds:F0} ms timeout: {result} after {wall.TotalMilliseconds:F0} ms; longest ticker gap {ticker.LongestGap.TotalMilliseconds:F0} ms");
        Assert.Multiple(() =>
        {
            Assert.That(result, Is.EqualTo("timed out"), "the timeout is raised when the call returns");
            Assert.That(wall, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(900)), "the wait was interrupted: update this test and docs/patching.md");
            Assert.That(ticker.LongestGap, Is.LessThan(GapBound), "the hub stalled while the call waited");
            Assert.That((string?)connection.GetDatabase().Execute("PING"), Is.EqualTo("PONG"));
        });
    }
}
