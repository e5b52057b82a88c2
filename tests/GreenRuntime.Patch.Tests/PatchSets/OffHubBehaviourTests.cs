using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// With every set patched, calls made off a hub (this test thread has none) behave exactly like the
/// originals: same results, timeouts and exceptions.
/// </summary>
[TestFixture]
public class OffHubBehaviourTests
{
    [OneTimeSetUp]
    public void PatchEverything()
    {
        Assert.That(Hub.CurrentOrNull, Is.Null, "these tests need a thread without a hub");
        PatchAssemblyAccess.All();
    }

    [OneTimeTearDown]
    public void Undo() => PatchAssemblyAccess.UndoAll();

    [Test]
    public void SleepBlocksTheThreadForItsDuration()
    {
        var watch = Stopwatch.StartNew();
        Thread.Sleep(50);
        Thread.Sleep(TimeSpan.FromMilliseconds(50));
        Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(95)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Thread.Sleep(-2));
        Assert.DoesNotThrow(() => Thread.Yield());
    }

    [Test]
    public void SocketReceiveSendAndReceiveTimeout()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndpoint);
        using var server = listener.AcceptSocket();
        Assert.That(server.Send("abc"u8.ToArray()), Is.EqualTo(3));
        var buffer = new byte[10];
        Assert.That(client.Receive(buffer), Is.EqualTo(3));
        client.ReceiveTimeout = 100;
        var e = Assert.Throws<SocketException>(() => client.Receive(buffer));
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.TimedOut));
        Assert.That(client.Receive(buffer, 0, 1, SocketFlags.None, out var error), Is.EqualTo(0));
        Assert.That(error, Is.EqualTo(SocketError.TimedOut));
        Assert.That(client.Poll(1000, SelectMode.SelectRead), Is.False);
        server.Shutdown(SocketShutdown.Send);
        Assert.That(client.Receive(buffer), Is.EqualTo(0), "EOF");
    }

    [Test]
    public void DnsAnswersLikeTheOriginal()
    {
        Assert.That(Dns.GetHostAddresses("127.0.0.1"), Is.EqualTo(new[] { IPAddress.Loopback }));
        Assert.That(Dns.GetHostEntry("localhost").AddressList, Is.Not.Empty);
        Assert.Throws<ArgumentNullException>(() => Dns.GetHostAddresses(null!));
        Assert.Throws<SocketException>(() => Dns.GetHostAddresses("no-such-host.invalid"));
    }

    [Test]
    public void FilesReadAndWriteLikeTheOriginal()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "hello files");
            Assert.That(File.ReadAllText(path), Is.EqualTo("hello files"));
            Assert.Throws<FileNotFoundException>(() => File.ReadAllBytes(path + ".missing"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void TaskWaitsLikeTheOriginal()
    {
        var never = new TaskCompletionSource().Task;
        Assert.That(never.Wait(50), Is.False);
        Assert.That(Task.Run(() => 42).Result, Is.EqualTo(42));
        var failed = Task.Run(() => throw new InvalidOperationException("boom"));
        Assert.That(Assert.Throws<AggregateException>(() => failed.Wait())!.InnerException, Is.TypeOf<InvalidOperationException>());
        Assert.Throws<InvalidOperationException>(() => failed.GetAwaiter().GetResult());
        Assert.That(Task.WaitAll([Task.Delay(10), never], 50), Is.False);
        Assert.That(Task.WaitAny([Task.Delay(10), never]), Is.EqualTo(0));
        using var cts = new CancellationTokenSource(30);
        Assert.Throws<OperationCanceledException>(() => never.Wait(cts.Token));
    }

    [Test]
    public void ThreadingWaitsLikeTheOriginal()
    {
        using var semaphore = new SemaphoreSlim(0);
        Assert.That(semaphore.Wait(30), Is.False);
        semaphore.Release();
        Assert.That(semaphore.Wait(30), Is.True);
        using var slim = new ManualResetEventSlim();
        Assert.That(slim.Wait(30), Is.False);
        using var auto = new AutoResetEvent(false);
        Assert.That(auto.WaitOne(30), Is.False);
        auto.Set();
        Assert.That(auto.WaitOne(30), Is.True);
        Assert.That(auto.WaitOne(0), Is.False, "the auto-reset event was consumed");
        var thread = new Thread(() => Thread.Sleep(30));
        thread.Start();
        Assert.That(thread.Join(5000), Is.True);
    }

    [Test]
    public void ProcessWaitForExitLikeTheOriginal()
    {
        using var p = Process.Start(new ProcessStartInfo("sleep", "0.1") { UseShellExecute = false })!;
        Assert.That(p.WaitForExit(10), Is.False);
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0));
        Assert.Throws<InvalidOperationException>(() => new Process().WaitForExit(10));
    }
}
