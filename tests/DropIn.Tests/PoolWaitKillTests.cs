using System.Diagnostics;
using GreenRuntime;
using Npgsql;

namespace DropIn.Tests;

/// <summary>
/// A greenlet killed while it waits for a connection of an exhausted pool. Npgsql's synchronous <c>Open</c> waits for
/// a pooled connection by queueing an asynchronous read on its idle-connection channel and then waiting, with no
/// token, for that read to complete ("cancellation happens through the ReadAsync"). A kill interrupts the wait like a
/// <c>Thread.Interrupt</c> would, and the abandoned read takes the next connection given back, for ever. The
/// documented remedy (docs/patching.md, "Libraries whose waits must not be interrupted") is to open inside
/// <see cref="Green.Shield"/>: the kill then waits for the open to finish, and the connection goes back to the pool
/// with the <c>using</c> that the kill unwinds through.
/// </summary>
public class PoolWaitKillTests : DropInTest
{
    [Test]
    public void AKillDuringAShieldedOpenOnAnExhaustedPoolLeavesThePoolWhole()
    {
        const int poolSize = 2;
        var connectionString = new NpgsqlConnectionStringBuilder(Servers.Postgres)
        {
            MaxPoolSize = poolSize,
            Timeout = 10,
            ApplicationName = $"dropin-pool-{Guid.NewGuid():N}", // a pool of its own
        }.ConnectionString;
        int Query(NpgsqlConnection c)
        {
            using var command = new NpgsqlCommand("SELECT 42", c);
            return (int)command.ExecuteScalar()!;
        }
        Servers.Connect("PostgreSQL", () =>
        {
            using var c = new NpgsqlConnection(connectionString);
            c.Open();
            return Query(c);
        });

        for (int round = 0; round < 3; round++)
        {
            // Both connections are taken; the victim waits for one inside the pool and is killed there.
            var held = Enumerable.Range(0, poolSize).Select(_ => new NpgsqlConnection(connectionString)).ToList();
            foreach (var c in held) c.Open();
            var victimWaiting = new GreenRuntime.Event();
            bool opened = false, slept = false;
            var victim = Green.Spawn(() =>
            {
                using var connection = new NpgsqlConnection(connectionString);
                victimWaiting.Set();
                using (Green.Shield()) connection.Open();
                opened = true;
                Green.Sleep(TimeSpan.FromSeconds(10)); // the kill held back by the shield is raised here
                slept = true;
            });
            victimWaiting.Wait();
            Green.Sleep(TimeSpan.FromMilliseconds(100)); // inside the pool's wait
            victim.Kill(block: false);
            Green.Sleep(TimeSpan.FromMilliseconds(50));
            foreach (var c in held) c.Dispose();
            Assert.That(victim.Join(TimeSpan.FromSeconds(5)), Is.True, "the killed greenlet did not end once a connection was free");
            Assert.That(opened, Is.True, "the shielded open finished once a connection was free");
            Assert.That(victim.Successful && !slept, Is.True, "the kill ended the greenlet at its next blocking point");

            // All of the pool is usable again: every connection of it at once, well before the pool's timeout.
            var watch = Stopwatch.StartNew();
            var again = Enumerable.Range(0, poolSize).Select(_ => Green.Spawn(() =>
            {
                using var c = new NpgsqlConnection(connectionString);
                c.Open();
                Green.Sleep(TimeSpan.FromMilliseconds(50)); // all of them open at the same time
                return Query(c);
            })).ToList();
            Green.JoinAll(again, raiseError: true);
            Assert.That(again.Select(g => g.Value), Has.All.EqualTo(42));
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), $"round {round}: a pool slot was lost to the killed open");
        }
    }
}
