using MySqlConnector;

namespace DropIn.Tests;

/// <summary>
/// MySqlConnector (a MySQL/MariaDB ADO.NET driver), synchronous API, unmodified: pooled connections, commands
/// with parameters and readers, in 30 greenlets against a real MariaDB server.
/// </summary>
public class MySqlConnectorTests : DropInTest
{
    private static (int Echo, long Connection) SleepAndEcho(string connectionString, int i)
    {
        using var connection = new MySqlConnection(connectionString);
        connection.Open();
        using var command = new MySqlCommand("SELECT SLEEP(@wait), @i, CONNECTION_ID()", connection);
        command.Parameters.AddWithValue("@wait", ServerWait.TotalSeconds);
        command.Parameters.AddWithValue("@i", i);
        using var reader = command.ExecuteReader();
        Assert.That(reader.Read(), Is.True);
        return (reader.GetInt32(1), reader.GetInt64(2));
    }

    [Test]
    public void QueriesThatSleepInTheServerOverlap()
    {
        var connectionString = Servers.MySql;
        Servers.Connect("MariaDB", () => SleepAndEcho(connectionString, -1));

        RunConcurrently("MySqlConnector SELECT SLEEP(0.2)", i => SleepAndEcho(connectionString, i), results =>
        {
            Assert.That(results.Select(r => r.Echo), Is.EqualTo(Enumerable.Range(0, Greenlets)));
            Assert.That(results.Select(r => r.Connection).Distinct().Count(), Is.EqualTo(Greenlets),
                "each greenlet should have had its own server connection");
        });
    }

    [Test]
    public void RowLocksMakeGreenletsWaitForEachOtherInTheServer()
    {
        var connectionString = Servers.MySql;
        var table = $"dropin_{Guid.NewGuid():N}";
        Servers.Connect("MariaDB", () =>
        {
            using var connection = new MySqlConnection(connectionString);
            connection.Open();
            using var create = new MySqlCommand($"CREATE TABLE {table} (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB", connection);
            create.ExecuteNonQuery();
            using var insert = new MySqlCommand($"INSERT INTO {table} VALUES (1, 0)", connection);
            return insert.ExecuteNonQuery();
        });
        try
        {
            // Every greenlet increments one counter row inside a transaction, reading it with FOR UPDATE: the
            // server queues them on the row lock, so the increments are serialised by the server while the
            // greenlets wait in their reads. No increment may be lost. Besides the row, each transaction sleeps
            // 200 ms in the server before taking the lock, and those sleeps overlap.
            RunConcurrently("MySqlConnector transactions with SELECT ... FOR UPDATE", i =>
            {
                using var connection = new MySqlConnection(connectionString);
                connection.Open();
                using var transaction = connection.BeginTransaction();
                using (var sleep = new MySqlCommand("DO SLEEP(@wait)", connection, transaction))
                {
                    sleep.Parameters.AddWithValue("@wait", ServerWait.TotalSeconds);
                    sleep.ExecuteNonQuery();
                }
                using var read = new MySqlCommand($"SELECT n FROM {table} WHERE id = 1 FOR UPDATE", connection, transaction);
                var n = Convert.ToInt32(read.ExecuteScalar());
                using var write = new MySqlCommand($"UPDATE {table} SET n = @n WHERE id = 1", connection, transaction);
                write.Parameters.AddWithValue("@n", n + 1);
                write.ExecuteNonQuery();
                transaction.Commit();
                return n;
            }, results =>
            {
                // Each greenlet read a different value: the server handed the row from one to the next.
                Assert.That(results.Distinct().Count(), Is.EqualTo(Greenlets));
                using var check = new MySqlConnection(connectionString);
                check.Open();
                using var select = new MySqlCommand($"SELECT n FROM {table} WHERE id = 1", check);
                var total = Convert.ToInt32(select.ExecuteScalar());
                Assert.That(total % Greenlets, Is.Zero, "an increment was lost");
                Assert.That(results.Max() + 1, Is.EqualTo(total));
            });
        }
        finally
        {
            using var connection = new MySqlConnection(connectionString);
            connection.Open();
            using var drop = new MySqlCommand($"DROP TABLE IF EXISTS {table}", connection);
            drop.ExecuteNonQuery();
        }
    }
}
