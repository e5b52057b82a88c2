using StackExchange.Redis;

namespace DropIn.Tests;

/// <summary>
/// StackExchange.Redis, synchronous API, unmodified, in 30 greenlets against a real Redis server. Its sync
/// calls hand the command to its own writer and wait with <c>lock</c> + <c>Monitor.Wait</c> until its reader
/// thread completes the reply, so they are cooperative through the Locks patch set (the wait releases the
/// hub's baton); its connect waits the same way.
/// </summary>
public class RedisTests : DropInTest
{
    [Test]
    public void BlockingPopsOfGreenletsOverlap()
    {
        var configuration = Servers.Redis;
        using var shared = Servers.Connect("Redis", () => ConnectionMultiplexer.Connect(configuration));
        var prefix = $"dropin:{Guid.NewGuid():N}";

        // A blocking command holds its connection in the server until it returns, so each greenlet pops on a
        // connection of its own (as Redis requires of any client); the shared multiplexer carries the ordinary
        // commands of all greenlets at once.
        RunConcurrently("StackExchange.Redis BLPOP (0.2 s timeout)", i =>
        {
            using var own = ConnectionMultiplexer.Connect(configuration);
            var popped = own.GetDatabase().Execute("BLPOP", $"{prefix}:empty:{i}", ServerWait.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var db = shared.GetDatabase();
            db.StringSet($"{prefix}:value:{i}", $"greenlet {i}");
            return (PoppedNothing: popped.IsNull, Value: (string?)db.StringGet($"{prefix}:value:{i}"));
        }, results =>
        {
            Assert.That(results.Select(r => r.PoppedNothing), Has.All.True, "BLPOP on an empty list must time out with nil");
            Assert.That(results.Select(r => r.Value), Is.EqualTo(Enumerable.Range(0, Greenlets).Select(i => $"greenlet {i}")));
        });
    }

    [Test]
    public void BlockingPopsAreAnsweredByAnotherGreenletsPush()
    {
        var configuration = Servers.Redis;
        using var shared = Servers.Connect("Redis", () => ConnectionMultiplexer.Connect(configuration));
        var prefix = $"dropin:{Guid.NewGuid():N}";
        var round = 0;

        // Each greenlet waits in the server (BLPOP, 10 s timeout) for an item that only the greenlet after it in
        // the ring pushes, after a 200 ms sleep of its own. If a pop held the hub's baton, the pushes could never
        // be sent and every pop would run into its timeout.
        RunConcurrently("StackExchange.Redis BLPOP answered by RPUSH", i =>
        {
            var key = (int k) => $"{prefix}:ring:{round}:{k}";
            using var own = ConnectionMultiplexer.Connect(configuration);
            var pusher = GreenRuntime.Green.Spawn(() =>
            {
                Thread.Sleep(ServerWait);
                shared.GetDatabase().ListRightPush(key((i + 1) % Greenlets), $"from {i}");
            });
            var popped = (RedisValue[]?)own.GetDatabase().Execute("BLPOP", key(i), "10");
            pusher.Join();
            return popped is null ? null : (string?)popped[1];
        }, results =>
        {
            round++;
            Assert.That(results, Is.EqualTo(Enumerable.Range(0, Greenlets).Select(i => $"from {(i + Greenlets - 1) % Greenlets}")));
        });
    }
}
