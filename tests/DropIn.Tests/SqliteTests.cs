using Microsoft.Data.Sqlite;

namespace DropIn.Tests;

/// <summary>
/// Microsoft.Data.Sqlite, unmodified, in 30 greenlets on one database file (no server: SQLite runs in the process).
/// SQLite lets one connection write at a time; a statement that finds the database locked is retried by the library
/// in managed code, with a <c>Thread.Sleep</c> between attempts, until the command timeout, not in SQLite's native
/// busy handler. Under <c>Patch.All()</c> that sleep parks the greenlet, so the connection that holds the lock, on
/// another greenlet of the same hub, can finish and commit. Blocking the thread instead, the waiting greenlet would
/// hold the hub until the timeout, and the holder could never commit.
/// </summary>
public class SqliteTests : DropInTest
{
    private string _directory = null!;

    [SetUp]
    public void CreateDirectory() => _directory = Directory.CreateTempSubdirectory("greenruntime-sqlite-").FullName;

    [TearDown]
    public void RemoveDirectory()
    {
        SqliteConnection.ClearAllPools(); // the pool keeps the files open otherwise
        Directory.Delete(_directory, recursive: true);
    }

    [Test]
    public void WritersThatFindTheDatabaseLockedWaitForTheHolderWithoutHoldingTheHub()
    {
        int round = 0;
        var database = Path.Combine(_directory, "orders.db");
        var connectionString = new SqliteConnectionStringBuilder { DataSource = database, DefaultTimeout = 30 }.ToString();
        using (var setup = new SqliteConnection(connectionString))
        {
            setup.Open();
            using var create = setup.CreateCommand();
            create.CommandText = "CREATE TABLE orders (round INTEGER, greenlet INTEGER)";
            create.ExecuteNonQuery();
        }

        // Greenlet 0 takes the write lock and keeps it for the server wait; the others each insert a row meanwhile, find
        // the database locked and wait until it commits.
        RunConcurrently("Microsoft.Data.Sqlite writers behind a held write lock", i =>
        {
            using var connection = new SqliteConnection(connectionString);
            connection.Open();
            if (i == 0)
            {
                using var transaction = connection.BeginTransaction(deferred: false); // BEGIN IMMEDIATE: the write lock now
                Insert(connection, transaction, round, i);
                Thread.Sleep(ServerWait);
                transaction.Commit();
                return "held";
            }
            Thread.Sleep(20); // the holder has the lock by then
            Insert(connection, null, round, i);
            return "waited";
        }, results =>
        {
            Assert.That(results.Count(r => r == "held"), Is.EqualTo(1));
            using var check = new SqliteConnection(connectionString);
            check.Open();
            using var count = check.CreateCommand();
            count.CommandText = "SELECT COUNT(DISTINCT greenlet) FROM orders WHERE round = $round";
            count.Parameters.AddWithValue("$round", round);
            Assert.That(Convert.ToInt32(count.ExecuteScalar()), Is.EqualTo(Greenlets), "every greenlet's row is there");
            round++;
        });
    }

    private static void Insert(SqliteConnection connection, SqliteTransaction? transaction, int round, int greenlet)
    {
        using var insert = connection.CreateCommand();
        insert.Transaction = transaction;
        insert.CommandText = "INSERT INTO orders VALUES ($round, $greenlet)";
        insert.Parameters.AddWithValue("$round", round);
        insert.Parameters.AddWithValue("$greenlet", greenlet);
        insert.ExecuteNonQuery();
    }
}
