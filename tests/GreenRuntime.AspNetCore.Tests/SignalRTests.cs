using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;

namespace GreenRuntime.AspNetCore.Tests;

/// <summary>SignalR hub methods of a green app run in greenlets of its hubs, like the requests of its endpoints.</summary>
[TestFixture]
public sealed class SignalRTests
{
    /// <summary>What a hub method or event saw of where it ran.</summary>
    internal sealed record Where(bool OnGreenlet, bool OnHostHub, string ConnectionId, string? User);

    internal sealed class LegacyHub(HubGroup group, IHttpContextAccessor accessor) : Microsoft.AspNetCore.SignalR.Hub
    {
        public static readonly ConcurrentDictionary<string, Where> Connected = new();
        public static readonly Concurrency Inside = new();
        public static TaskCompletionSource<Greenlet> Started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public static TaskCompletionSource Killed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public static int Disconnected, Cleaned;

        public override Task OnDisconnectedAsync(Exception? exception)
        {
            Interlocked.Increment(ref Disconnected);
            Thread.Sleep(5); // a legacy cleanup: remove the session's row
            Interlocked.Increment(ref Cleaned);
            return base.OnDisconnectedAsync(exception);
        }

        public override Task OnConnectedAsync()
        {
            Thread.Sleep(10); // a legacy lookup on connect
            Connected[Context.ConnectionId] = Here();
            return Task.CompletedTask;
        }

        public Where Sleep(int ms)
        {
            using (Inside.Enter()) Thread.Sleep(ms);
            return Here();
        }

        public async Task<Where> SleepAfterAwait(int ms)
        {
            await Task.Yield();
            Thread.Sleep(ms);
            return Here();
        }

        public string Forever()
        {
            Started.TrySetResult(Green.Current);
            try
            {
                Thread.Sleep(TimeSpan.FromSeconds(60));
            }
            catch (GreenletExit)
            {
                Killed.TrySetResult();
                throw;
            }
            return "not killed";
        }

        public string Fail() => throw new HubException("the legacy call failed");

        public async IAsyncEnumerable<Where> Stream(int count)
        {
            for (int i = 0; i < count; i++)
            {
                Thread.Sleep(20); // a legacy read of the next row
                yield return Here();
                await Task.Yield();
            }
        }

        private Where Here() => new(
            GreenRuntime.LowLevel.Parking.CanPark,
            GreenRuntime.LowLevel.Parking.CurrentHub is { } hub && group.Hubs.Contains(hub),
            Context.ConnectionId,
            accessor.HttpContext?.Request.Query["user"]);
    }

    private static Task<TestApp> StartAsync() => TestApp.StartAsync(
        a => a.MapHub<LegacyHub>("/legacy"),
        configure: o => o.KillAbortedRequests = true,
        services: s =>
        {
            s.AddSignalR(o => o.EnableDetailedErrors = false);
            s.AddHttpContextAccessor();
        });

    private static async Task<HubConnection> ConnectAsync(TestApp app, string user)
    {
        var connection = new HubConnectionBuilder()
            .WithUrl(new Uri(app.Client.BaseAddress!, $"/legacy?user={user}"))
            .Build();
        await connection.StartAsync();
        return connection;
    }

    [Test]
    public async Task BlockingHubMethodsRunInGreenletsOfTheHostsHubsAndOverlap()
    {
        await using var app = await StartAsync();
        var connections = await Task.WhenAll(Enumerable.Range(0, 40).Select(i => ConnectAsync(app, $"u{i}")));
        try
        {
            var calls = connections.Select(c => c.InvokeAsync<Where>(nameof(LegacyHub.Sleep), 1000)).ToArray();
            var results = await Task.WhenAll(calls).WaitAsync(TimeSpan.FromSeconds(60));
            for (int i = 0; i < connections.Length; i++)
            {
                Assert.That(results[i].OnGreenlet && results[i].OnHostHub, Is.True, "the hub method ran in a greenlet of the host");
                Assert.That(results[i].ConnectionId, Is.EqualTo(connections[i].ConnectionId));
                Assert.That(results[i].User, Is.EqualTo($"u{i}"), "the connection's HttpContext, through IHttpContextAccessor");
                Assert.That(LegacyHub.Connected[connections[i].ConnectionId!], Is.EqualTo(results[i] with { }), "OnConnectedAsync too");
            }
            Assert.That(LegacyHub.Inside.Peak, Is.EqualTo(connections.Length), "every call was inside its sleep at once");
            var afterAwait = await connections[0].InvokeAsync<Where>(nameof(LegacyHub.SleepAfterAwait), 10);
            Assert.That(afterAwait.OnGreenlet && afterAwait.OnHostHub, Is.True, "code after an await runs on the hub too");
        }
        finally
        {
            foreach (var c in connections) await c.DisposeAsync();
        }
    }

    [Test]
    public async Task AStreamingHubMethodsItemsAreMadeInGreenletsOfTheHostsHubs()
    {
        await using var app = await StartAsync();
        var connections = await Task.WhenAll(Enumerable.Range(0, 10).Select(i => ConnectAsync(app, $"s{i}")));
        try
        {
            async Task<List<Where>> Read(HubConnection c)
            {
                var items = new List<Where>();
                await foreach (var item in c.StreamAsync<Where>(nameof(LegacyHub.Stream), 5)) items.Add(item);
                return items;
            }
            var streams = await Task.WhenAll(connections.Select(Read)).WaitAsync(TimeSpan.FromSeconds(60));
            for (int i = 0; i < connections.Length; i++)
            {
                Assert.That(streams[i], Has.Count.EqualTo(5));
                Assert.That(streams[i].All(w => w.OnGreenlet && w.OnHostHub), Is.True, "every item was made in a greenlet of the host");
                Assert.That(streams[i].All(w => w.ConnectionId == connections[i].ConnectionId), Is.True);
            }
        }
        finally
        {
            foreach (var c in connections) await c.DisposeAsync();
        }
    }

    [Test]
    public async Task AClosedConnectionKillsItsHubMethodsGreenlet()
    {
        LegacyHub.Started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        LegacyHub.Killed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await StartAsync();
        var connection = await ConnectAsync(app, "gone");
        var call = connection.InvokeAsync<string>(nameof(LegacyHub.Forever));
        var greenlet = await LegacyHub.Started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await connection.DisposeAsync(); // the client goes away: ConnectionAborted
        await LegacyHub.Killed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        for (int i = 0; i < 200 && !greenlet.Dead; i++) await Task.Delay(50);
        Assert.That(greenlet.Dead, Is.True);
        Assert.That(async () => await call, Throws.Exception);
        // The app serves on.
        await using var next = await ConnectAsync(app, "next");
        Assert.That((await next.InvokeAsync<Where>(nameof(LegacyHub.Sleep), 1)).OnGreenlet, Is.True);
    }

    /// <summary>A hub filter outside the host's (added before <c>AddGreenlets</c>) that calls the rest of the chain from
    /// a greenlet of the host's hubs that the connection does not own: where SignalR's dispatch loop runs when its
    /// continuations land on the connection's websocket request, which happens now and then.</summary>
    private sealed class DispatchOnAnotherGreenlet : IHubFilter
    {
        public ValueTask<object?> InvokeMethodAsync(HubInvocationContext invocationContext, Func<HubInvocationContext, ValueTask<object?>> next)
        {
            var group = invocationContext.ServiceProvider.GetRequiredService<HubGroup>();
            var invoked = new TaskCompletionSource<Task<object?>>(TaskCreationOptions.RunContinuationsAsynchronously);
            group.Spawn(() => invoked.SetResult(next(invocationContext).AsTask()), "dispatch elsewhere");
            return new ValueTask<object?>(invoked.Task.Unwrap());
        }
    }

    [Test]
    public async Task AClosedConnectionKillsItsHubMethodsGreenletWhenSignalRDispatchesFromAnotherGreenletOfTheHost()
    {
        LegacyHub.Started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        LegacyHub.Killed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a => a.MapHub<LegacyHub>("/legacy"),
            configure: o => o.KillAbortedRequests = true,
            services: s =>
            {
                s.AddSignalR();
                s.AddHttpContextAccessor();
                // First of the hub options' configurations, so before AddGreenlets' filter: the outer one.
                s.Insert(0, ServiceDescriptor.Singleton<Microsoft.Extensions.Options.IConfigureOptions<Microsoft.AspNetCore.SignalR.HubOptions>>(
                    new Microsoft.Extensions.Options.ConfigureOptions<Microsoft.AspNetCore.SignalR.HubOptions>(static o => o.AddFilter(new DispatchOnAnotherGreenlet()))));
            });
        var connection = await ConnectAsync(app, "gone");
        var call = connection.InvokeAsync<string>(nameof(LegacyHub.Forever));
        var greenlet = await LegacyHub.Started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(greenlet.Name, Is.EqualTo("signalr hub method"), "the method got a greenlet of its own, not the dispatching one");
        await connection.DisposeAsync();
        Assert.That(async () => await LegacyHub.Killed.Task.WaitAsync(TimeSpan.FromSeconds(30)), Throws.Nothing, "ConnectionAborted killed the method");
        for (int i = 0; i < 200 && !greenlet.Dead; i++) await Task.Delay(50);
        Assert.That(greenlet.Dead, Is.True);
        Assert.That(async () => await call, Throws.Exception);
    }

    [Test]
    public async Task OnDisconnectedRunsItsBlockingCleanupToTheEndWhenClientsCloseTheirWebsockets()
    {
        // The websocket's request sees RequestAborted when its client closes the socket: that is how an upgraded
        // connection ends, not a client giving up on a response, so nothing of the connection's cleanup is killed.
        await using var app = await StartAsync();
        int disconnected = Volatile.Read(ref LegacyHub.Disconnected), cleaned = Volatile.Read(ref LegacyHub.Cleaned);
        var connections = await Task.WhenAll(Enumerable.Range(0, 30).Select(i => ConnectAsync(app, $"d{i}")));
        foreach (var c in connections) Assert.That((await c.InvokeAsync<Where>(nameof(LegacyHub.Sleep), 1)).OnGreenlet, Is.True);
        await Task.WhenAll(connections.Select(c => c.DisposeAsync().AsTask()));
        for (int i = 0; i < 200 && Volatile.Read(ref LegacyHub.Disconnected) - disconnected < connections.Length; i++) await Task.Delay(50);
        await Task.Delay(200);
        Assert.That(Volatile.Read(ref LegacyHub.Disconnected) - disconnected, Is.EqualTo(connections.Length));
        Assert.That(Volatile.Read(ref LegacyHub.Cleaned) - cleaned, Is.EqualTo(connections.Length), "every OnDisconnectedAsync ran past its blocking call");
    }

    [Test]
    public async Task AHubMethodsExceptionReachesItsCallerAndTheConnectionServesOn()
    {
        await using var app = await StartAsync();
        await using var connection = await ConnectAsync(app, "fails");
        var e = Assert.ThrowsAsync<HubException>(() => connection.InvokeAsync<string>(nameof(LegacyHub.Fail)));
        Assert.That(e!.Message, Does.Contain("the legacy call failed"));
        Assert.That((await connection.InvokeAsync<Where>(nameof(LegacyHub.Sleep), 1)).OnGreenlet, Is.True);
    }
}
