using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Patched calls on greenlets: they park only the greenlet, keep timeouts, and cancel cleanly on kill.</summary>
[TestFixture]
public class OnHubBehaviourTests : PatchedHubTest
{
    private static (Socket Client, Socket Server, TcpListener Listener) ConnectedPair()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connect = client.ConnectAsync(listener.LocalEndpoint);
        var server = listener.AcceptSocketAsync();
        Task.WaitAll(connect, server);
        return (client, server.Result, listener);
    }

    [Test]
    public void KillCancelsAPendingReceiveWithoutLosingData()
    {
        var (client, server, listener) = ConnectedPair();
        using (client)
        using (server)
        using (listener.Server)
        {
            var buffer = new byte[16];
            var receiver = Green.Spawn(() => client.Receive(buffer));
            Green.Sleep(50);
            Assert.That(receiver.WaitReason, Is.EqualTo(WaitReason.Socket), "parked in the receive");
            receiver.Kill();
            Assert.That(receiver.Dead, Is.True);
            server.Send("0123456789"u8.ToArray());
            var again = new byte[16];
            int n = Green.Spawn(() => client.Receive(again)).Get();
            Assert.That(again.AsSpan(0, n).ToArray(), Is.EqualTo("0123456789"u8.ToArray()), "every byte reaches the next receive");
            Assert.That(buffer, Has.All.EqualTo((byte)0), "the killed receive wrote nothing into its buffer");
        }
    }

    [Test]
    public void ReceiveTimeoutKeepsItsMeaningAndOtherGreenletsRun()
    {
        var (client, server, listener) = ConnectedPair();
        using (client)
        using (server)
        using (listener.Server)
        {
            client.ReceiveTimeout = 150;
            var ticks = 0;
            var ticker = Green.Spawn(() =>
            {
                for (int i = 0; i < 5; i++)
                {
                    Thread.Sleep(10);
                    ticks++;
                }
            });
            var e = Assert.Throws<SocketException>(() => client.Receive(new byte[4]));
            Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.TimedOut));
            Assert.That(ticks, Is.EqualTo(5), "the ticker ran while the main greenlet waited for data");
            ticker.Join();
            server.Send([7, 8]);
            var buffer = new byte[4];
            Assert.That(client.Receive(buffer), Is.EqualTo(2));
            Assert.That(buffer[..2], Is.EqualTo(new byte[] { 7, 8 }));
        }
    }

    [Test]
    public void AcceptAndConnectPark()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var order = new List<string>();
        var acceptor = Green.Spawn(() =>
        {
            using var accepted = listener.Accept();
            order.Add("accepted");
            accepted.Send([42]);
        });
        Green.Sleep(20);
        order.Add("connecting");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        var one = new byte[1];
        Assert.That(client.Receive(one), Is.EqualTo(1));
        acceptor.Join();
        Assert.That(order, Is.EqualTo(new[] { "connecting", "accepted" }));
        Assert.That(one[0], Is.EqualTo(42));
        Assert.That(client.Blocking, Is.True);
    }

    [Test]
    public void GreenletsWaitForEachOtherThroughThreadingPrimitives()
    {
        using var semaphore = new SemaphoreSlim(0);
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        var log = new List<string>();
        var waiter = Green.Spawn(() =>
        {
            semaphore.Wait();
            log.Add("semaphore");
            slim.Wait();
            log.Add("slim");
            Assert.That(auto.WaitOne(5000), Is.True);
            log.Add("auto");
        });
        var releaser = Green.Spawn(() =>
        {
            log.Add("release");
            semaphore.Release();
            Thread.Sleep(10);
            slim.Set();
            Thread.Sleep(10);
            auto.Set();
        });
        // Without the patches the waiter would block the hub's only running thread and the releaser never runs.
        Green.JoinAll([waiter, releaser], TimeSpan.FromSeconds(10), raiseError: true);
        Assert.That(log, Is.EqualTo(new[] { "release", "semaphore", "slim", "auto" }));
        Assert.That(auto.WaitOne(0), Is.False, "the signal was consumed exactly once");
    }

    [Test]
    public void TimeoutsOfThreadingWaitsOnAGreenlet()
    {
        using var semaphore = new SemaphoreSlim(0);
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        var others = 0;
        var busy = Green.Spawn(() =>
        {
            for (int i = 0; i < 3; i++)
            {
                Thread.Sleep(5);
                others++;
            }
        });
        Assert.That(semaphore.Wait(50), Is.False);
        Assert.That(slim.Wait(50), Is.False);
        Assert.That(auto.WaitOne(50), Is.False);
        Assert.That(new TaskCompletionSource().Task.Wait(50), Is.False);
        busy.Join();
        Assert.That(others, Is.EqualTo(3));
        semaphore.Release();
        Assert.That(semaphore.CurrentCount, Is.EqualTo(1), "a timed-out wait took no count");
    }

    [Test]
    public void KilledSemaphoreWaiterTakesNoCount()
    {
        using var semaphore = new SemaphoreSlim(0);
        var waiter = Green.Spawn(() => semaphore.Wait());
        Green.Sleep(20);
        waiter.Kill();
        semaphore.Release();
        Assert.That(semaphore.CurrentCount, Is.EqualTo(1));
    }

    [Test]
    public void TaskResultOfWorkThatNeedsTheHub()
    {
        // A task completed by another greenlet: a blocking wait would deadlock the hub.
        var source = new TaskCompletionSource<int>();
        Green.Spawn(() =>
        {
            Thread.Sleep(20);
            source.SetResult(5);
        });
        Assert.That(source.Task.Result, Is.EqualTo(5));
        var many = Enumerable.Range(0, 20).Select(i => Task.Delay(100).ContinueWith(_ => i)).ToArray();
        var watch = Stopwatch.StartNew();
        var results = new int[20];
        RunInGreenlets(20, i => results[i] = many[i].GetAwaiter().GetResult());
        Assert.That(results, Is.EqualTo(Enumerable.Range(0, 20)));
        Task.WaitAll(many);
        Assert.That(Task.WaitAny([new TaskCompletionSource().Task, Task.Delay(10)]), Is.EqualTo(1));
    }

    [Test]
    public void ThreadJoinAndProcessWaitForExitPark()
    {
        var ticks = 0;
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 5; i++)
            {
                Thread.Sleep(10);
                ticks++;
            }
        });
        var worker = new Thread(() => { var w = Stopwatch.StartNew(); while (w.ElapsedMilliseconds < 150) { } });
        worker.Start();
        worker.Join();
        using var p = Process.Start(new ProcessStartInfo("sleep", "0.1") { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0));
        ticker.Join();
        Assert.That(ticks, Is.EqualTo(5));
    }

    [Test]
    public void CallSitesCompiledBeforePatchingAreRedirected()
    {
        // PatchedHubTest patched in OneTimeSetUp; prove it with a method first compiled and run before that:
        // Precompiled.SleepBriefly ran (and was jitted) when the assembly loaded, before any patching.
        Assert.That(Precompiled.RanBeforePatching, Is.True);
        var all = RunInGreenlets(20, _ => Precompiled.SleepBriefly());
        Assert.That(all, Is.LessThan(TimeSpan.FromMilliseconds(20 * 100 / 3)), "the 20 sleeps overlapped");
    }
}

/// <summary>Code compiled and run when the test assembly loads (module initializer), before any patching.</summary>
internal static class Precompiled
{
    public static bool RanBeforePatching { get; private set; }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void SleepBriefly() => Thread.Sleep(100);

    [ModuleInitializer]
    internal static void RunAtLoad()
    {
        SleepBriefly();
        RanBeforePatching = true;
    }
}
