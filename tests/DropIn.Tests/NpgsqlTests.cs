using Npgsql;

namespace DropIn.Tests;

/// <summary>
/// Npgsql (PostgreSQL's ADO.NET driver), synchronous API, unmodified: connections from its pool, commands,
/// parameters and readers, in 30 greenlets against a real PostgreSQL server.
/// </summary>
public class NpgsqlTests : DropInTest
{
    private static (int Echo, int Backend) SleepAndEcho(string connectionString, int i)
    {
        using var connection = new NpgsqlConnection(connectionString);
        connection.Open();
        using var command = new NpgsqlCommand("SELECT pg_sleep(@wait), @i, pg_backend_pid()", connection);
        command.Parameters.AddWithValue("wait", ServerWait.TotalSeconds);
        command.Parameters.AddWithValue("i", i);
        using var reader = command.ExecuteReader();
        Assert.That(reader.Read(), Is.True);
        return (reader.GetInt32(1), reader.GetInt32(2));
    }

    [Test]
    public void QueriesThatSleepInTheServerOverlap()
    {
        var connectionString = Servers.Postgres;
        Servers.Connect("PostgreSQL", () => SleepAndEcho(connectionString, -1));

        RunConcurrently("Npgsql SELECT pg_sleep(0.2)", i => SleepAndEcho(connectionString, i), results =>
        {
            Assert.That(results.Select(r => r.Echo), Is.EqualTo(Enumerable.Range(0, Greenlets)));
            Assert.That(results.Select(r => r.Backend).Distinct().Count(), Is.EqualTo(Greenlets),
                "each greenlet should have had its own server connection");
        });
    }

    [Test]
    public void TransactionsOfConcurrentGreenletsStayApart()
    {
        var connectionString = Servers.Postgres;
        var table = $"dropin_{Guid.NewGuid():N}";
        Servers.Connect("PostgreSQL", () =>
        {
            using var connection = new NpgsqlConnection(connectionString);
            connection.Open();
            using var create = new NpgsqlCommand($"CREATE TABLE {table} (greenlet int, item int)", connection);
            return create.ExecuteNonQuery();
        });
        try
        {
            // Each greenlet inserts its rows in a transaction that waits in the server before committing; half
            // of them roll back. Only the committed rows may be visible afterwards, each greenlet's own.
            RunConcurrently("Npgsql transactions", i =>
            {
                using var connection = new NpgsqlConnection(connectionString);
                connection.Open();
                using var transaction = connection.BeginTransaction();
                for (int item = 0; item < 5; item++)
                {
                    using var insert = new NpgsqlCommand($"INSERT INTO {table} VALUES (@g, @item)", connection, transaction);
                    insert.Parameters.AddWithValue("g", i);
                    insert.Parameters.AddWithValue("item", item);
                    insert.ExecuteNonQuery();
                }
                using (var wait = new NpgsqlCommand("SELECT pg_sleep(@wait)", connection, transaction))
                {
                    wait.Parameters.AddWithValue("wait", ServerWait.TotalSeconds);
                    wait.ExecuteNonQuery();
                }
                if (i % 2 == 0) transaction.Commit();
                else transaction.Rollback();
                return i;
            }, _ =>
            {
                using var check = new NpgsqlConnection(connectionString);
                check.Open();
                var rows = new List<(int, long, long)>();
                using (var select = new NpgsqlCommand($"SELECT greenlet, count(*), sum(item) FROM {table} GROUP BY greenlet ORDER BY greenlet", check))
                using (var reader = select.ExecuteReader())
                {
                    while (reader.Read()) rows.Add((reader.GetInt32(0), reader.GetInt64(1), reader.GetInt64(2)));
                }
                Assert.That(rows, Is.EqualTo(Enumerable.Range(0, Greenlets).Where(g => g % 2 == 0).Select(g => (g, 5L, 10L))));
                using var truncate = new NpgsqlCommand($"TRUNCATE {table}", check);
                truncate.ExecuteNonQuery();
            });
        }
        finally
        {
            using var connection = new NpgsqlConnection(connectionString);
            connection.Open();
            using var drop = new NpgsqlCommand($"DROP TABLE IF EXISTS {table}", connection);
            drop.ExecuteNonQuery();
        }
    }
}
