using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DropIn.Tests;

/// <summary>
/// Entity Framework Core over Npgsql, synchronous API, unmodified: a DbContext per greenlet that adds an entity,
/// saves it in a transaction that waits in the server, and reads it back with a LINQ query, in 30 greenlets
/// against a real PostgreSQL server. EF Core's synchronous calls reach Npgsql's synchronous socket I/O, so nothing
/// beyond the driver's own path needs to be cooperative.
/// </summary>
public class EntityFrameworkCoreTests : DropInTest
{
    private sealed class Order
    {
        public int Id { get; set; }
        public string Customer { get; set; } = "";
        public int Greenlet { get; set; }
    }

    private sealed class Shop(string connectionString, string table) : DbContext
    {
        public DbSet<Order> Orders => Set<Order>();

        protected override void OnConfiguring(DbContextOptionsBuilder options) => options.UseNpgsql(connectionString);

        protected override void OnModelCreating(ModelBuilder model) => model.Entity<Order>().ToTable(table);
    }

    [Test]
    public void SaveChangesAndQueriesOfConcurrentGreenletsOverlapAndStayApart()
    {
        var connectionString = Servers.Postgres;
        var table = $"dropin_ef_{Guid.NewGuid():N}";
        Servers.Connect("PostgreSQL", () =>
        {
            using var connection = new NpgsqlConnection(connectionString);
            connection.Open();
            using var create = new NpgsqlCommand($"""CREATE TABLE {table} ("Id" serial PRIMARY KEY, "Customer" text NOT NULL, "Greenlet" int NOT NULL)""", connection);
            return create.ExecuteNonQuery();
        });
        try
        {
            int round = 0;
            RunConcurrently("EF Core SaveChanges + query", i =>
            {
                var customer = $"customer {i} of round {Volatile.Read(ref round)}";
                using var shop = new Shop(connectionString, table);
                using (var transaction = shop.Database.BeginTransaction())
                {
                    shop.Orders.Add(new Order { Customer = customer, Greenlet = i });
                    shop.SaveChanges();
                    shop.Database.ExecuteSqlRaw("SELECT pg_sleep({0})", ServerWait.TotalSeconds);
                    transaction.Commit();
                }
                var saved = shop.Orders.AsNoTracking().Single(o => o.Customer == customer);
                return (saved.Greenlet, saved.Id);
            }, results =>
            {
                Interlocked.Increment(ref round);
                Assert.That(results.Select(r => r.Greenlet), Is.EqualTo(Enumerable.Range(0, Greenlets)),
                    "each greenlet read back the row it saved");
                Assert.That(results.Select(r => r.Id).Distinct().Count(), Is.EqualTo(Greenlets));
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
