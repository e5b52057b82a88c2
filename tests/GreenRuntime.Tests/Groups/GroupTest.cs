using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Groups;

/// <summary>A test thread with its own hub (HubTest) and a group of hubs, disposed after each test.</summary>
public abstract class GroupTest : HubTest
{
    protected HubGroup Group = null!;

    protected virtual int HubCount => 4;

    /// <summary>Group hubs without the blocking monitor: tests spin on purpose, and a stack capture pauses the process.</summary>
    protected HubOptions GroupHubOptions() => new()
    {
        MaxBlockingTime = null,
        LoggerFactory = LoggerFactory.Create(b => b.AddProvider(Logs).SetMinimumLevel(LogLevel.Trace)),
    };

    [SetUp]
    public void CreateGroup() => Group = new HubGroup(HubCount, GroupHubOptions());

    [TearDown]
    public void DisposeGroup() => Group.Dispose();

    /// <summary>Waits (cooperatively, on the test's hub) until <paramref name="condition"/> holds; fails after 20 s.</summary>
    protected static void WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out waiting until {what}");
            Green.Sleep(2);
        }
    }
}
