namespace DropIn.Tests;

/// <summary>
/// Where the real servers are: <c>servers.sh</c> (run by .ci/run) starts PostgreSQL, Redis and MariaDB on
/// loopback and exports their connection strings. Without them a test is ignored with a message saying how to
/// run it, unless the servers are required (<c>DROPIN_SERVERS_REQUIRED=1</c>, set by servers.sh, or CI=true):
/// then a missing or unreachable server fails the test, so CI cannot pass without having run it.
/// </summary>
internal static class Servers
{
    public const string HowToRun =
        "start the servers with `tests/DropIn.Tests/servers.sh run dotnet test tests/DropIn.Tests` (or run .ci/run)";

    private static bool Required =>
        Environment.GetEnvironmentVariable("DROPIN_SERVERS_REQUIRED") == "1"
        || string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static string Postgres => Get("DROPIN_POSTGRES", "PostgreSQL");

    public static string Redis => Get("DROPIN_REDIS", "Redis");

    public static string MySql => Get("DROPIN_MYSQL", "MariaDB");

    private static string Get(string variable, string server)
    {
        var value = Environment.GetEnvironmentVariable(variable);
        if (!string.IsNullOrEmpty(value))
            return value;
        Unavailable($"{server} is not running ({variable} is not set): {HowToRun}.");
        return null!;
    }

    /// <summary>Fails (servers required) or ignores the test, with <paramref name="message"/>.</summary>
    public static void Unavailable(string message)
    {
        if (Required)
            Assert.Fail(message);
        Assert.Ignore(message);
    }

    /// <summary>Runs the first connection of a test; a server that cannot be reached is reported as <see cref="Unavailable"/>.</summary>
    public static T Connect<T>(string server, Func<T> connect)
    {
        try
        {
            return connect();
        }
        catch (Exception e) when (e is not AssertionException and not IgnoreException)
        {
            Unavailable($"{server} could not be reached ({e.GetType().Name}: {e.Message}): {HowToRun}.");
            throw;
        }
    }
}
