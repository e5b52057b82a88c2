using System.Net.Sockets;
using GreenRuntime.Io;

namespace GreenRuntime.Tests.Io;

/// <summary>Base of the fixtures that drive loopback sockets through the hub's reactor: skipped where there is none, and
/// every pair made by <see cref="Pair"/> is closed after the test.</summary>
public abstract class ReactorSocketTest : HubTest
{
    private readonly List<Socket> _sockets = new();

    [SetUp]
    public void RequireReactor()
    {
        if (!Epoll.IsSupported) Assert.Ignore("The reactor exists on Linux x64 only.");
    }

    [TearDown]
    public void CloseSockets()
    {
        foreach (var s in _sockets) s.Dispose();
        _sockets.Clear();
    }

    /// <summary>A connected loopback pair with Nagle off, closed after the test.</summary>
    protected (Socket A, Socket B) Pair()
    {
        var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        a.NoDelay = b.NoDelay = true;
        _sockets.Add(a);
        _sockets.Add(b);
        return (a, b);
    }
}
