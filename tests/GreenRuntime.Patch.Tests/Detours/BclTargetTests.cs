using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Detours;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>Detours of the BCL funnels the patch sets use: redirected, original callable, undone.</summary>
[TestFixture]
public class BclTargetTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void ThreadSleepIntAndTimeSpanAreRedirected()
    {
        using Detour d = BclTargets.DetourSleep();
        long before = Interlocked.Read(ref BclTargets.Hits[BclTargets.SleepId]);
        BclTargets.Active = BclTargets.SleepId;
        var watch = Stopwatch.StartNew();
        try
        {
            Thread.Sleep(5_000);
            Thread.Sleep(TimeSpan.FromSeconds(5));
        }
        finally
        {
            BclTargets.Active = 0;
        }

        Assert.That(Interlocked.Read(ref BclTargets.Hits[BclTargets.SleepId]) - before, Is.EqualTo(2));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "The redirected sleeps must not have slept.");

        watch.Restart();
        d.GetOriginal<Action<int>>()(30);
        Assert.That(watch.ElapsedMilliseconds, Is.GreaterThanOrEqualTo(25), "The original must really sleep.");
        Assert.Throws<ArgumentOutOfRangeException>(() => d.GetOriginal<Action<int>>()(-5));
    }

    [Test]
    public void RandomAccessReadAtOffsetIsRedirected()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "hello detours");
            using SafeFileHandle handle = File.OpenHandle(path);
            using Detour d = BclTargets.DetourReadAtOffset();
            var buffer = new byte[5];
            BclTargets.Active = BclTargets.ReadId;
            try
            {
                Assert.That(RandomAccess.Read(handle, buffer, 0), Is.EqualTo(5));
            }
            finally
            {
                BclTargets.Active = 0;
            }

            Assert.That(Encoding.ASCII.GetString(buffer), Is.EqualTo("ZZZZZ"));
            Assert.That(RandomAccess.Read(handle, buffer, 6), Is.EqualTo(5), "Unflagged calls go to the original.");
            Assert.That(Encoding.ASCII.GetString(buffer), Is.EqualTo("detou"));
            Assert.That(d.GetOriginal<BclTargets.ReadAtOffsetFn>()(handle, buffer, 0), Is.EqualTo(5));
            Assert.That(Encoding.ASCII.GetString(buffer), Is.EqualTo("hello"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void SocketReceiveIsRedirected()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using Socket server = listener.Accept();
        client.Send("ping"u8.ToArray());

        using Detour d = BclTargets.DetourReceive();
        var buffer = new byte[16];
        BclTargets.Active = BclTargets.ReceiveId;
        int redirected;
        try
        {
            redirected = server.Receive(buffer, 0, buffer.Length, SocketFlags.None, out _);
        }
        finally
        {
            BclTargets.Active = 0;
        }

        Assert.That(redirected, Is.EqualTo(-42));
        int n = server.Receive(buffer, 0, buffer.Length, SocketFlags.None, out SocketError error);
        Assert.That((n, error), Is.EqualTo((4, SocketError.Success)));
        Assert.That(Encoding.ASCII.GetString(buffer, 0, n), Is.EqualTo("ping"));

        d.Dispose();
        client.Send("pong"u8.ToArray());
        BclTargets.Active = BclTargets.ReceiveId;
        try
        {
            n = server.Receive(buffer, 0, buffer.Length, SocketFlags.None, out error);
        }
        finally
        {
            BclTargets.Active = 0;
        }

        Assert.That(Encoding.ASCII.GetString(buffer, 0, n), Is.EqualTo("pong"), "After Dispose the original runs again.");
    }
}
