using Microsoft.Win32.SafeHandles;
using GreenRuntime.Io;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Io;

/// <summary>
/// A post from another thread that races the hub's close must never write the reactor's eventfd once its number may
/// belong to another file (Scheduling/Parker.cs, Io/Reactor.cs: the eventfd is closed only when no unpark uses it).
/// </summary>
[TestFixture]
public class InboxEventFdCloseTests
{
    private readonly List<string> _files = new();

    [SetUp]
    public void RequireReactor()
    {
        if (!Epoll.IsSupported) Assert.Ignore("The reactor exists on Linux x64 only.");
    }

    [TearDown]
    public void DeleteFiles()
    {
        foreach (var f in _files) File.Delete(f);
        _files.Clear();
    }

    private SafeFileHandle OpenScratchFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"greenruntime-eventfd-{Guid.NewGuid():N}");
        _files.Add(path);
        return File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
    }

    [Test]
    public void A_post_that_read_the_eventfd_before_the_hub_closed_does_not_write_a_reused_descriptor()
    {
        // The interleaving, forced: the poster finds the hub asleep in epoll and is held just before its eventfd write;
        // the hub wakes by its own timer, is disposed (its reactor with it), and the process opens files, which take
        // the lowest free descriptor numbers; then the poster goes on.
        using var inHook = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        using var hubReady = new ManualResetEventSlim();
        Hub? hub = null;
        string? eventFd = null;
        int held = 0;
        Exception? hubFailure = null;
        var hubThread = new Thread(() =>
        {
            try
            {
                hub = new Hub();
                eventFd = hub.Reactor!.EventFd.ToString();
                hub.InboxSignal.BeforeEventFdWrite = () =>
                {
                    if (Interlocked.Exchange(ref held, 1) != 0) return;
                    inHook.Set();
                    release.Wait(TimeSpan.FromSeconds(30));
                };
                hubReady.Set();
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
                while (!inHook.IsSet && DateTime.UtcNow < deadline) Green.Sleep(5); // asleep in epoll most of the time
                hub.Dispose();
            }
            catch (Exception e)
            {
                hubFailure = e;
                hubReady.Set();
            }
        });
        hubThread.Start();
        Assert.That(hubReady.Wait(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(hubFailure, Is.Null);

        var poster = new Thread(() =>
        {
            // Until one post finds the hub asleep (and is held in the hook until released).
            while (!inHook.IsSet && !hub!.IsDisposed)
            {
                if (!hub.InboxSignal.IsSleeping)
                {
                    Thread.SpinWait(20);
                    continue;
                }
                try
                {
                    hub.Post(() => { });
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
            }
        });
        poster.Start();
        try
        {
            Assert.That(inHook.Wait(TimeSpan.FromSeconds(20)), Is.True, "a post found the hub asleep in epoll");
            Assert.That(hubThread.Join(TimeSpan.FromSeconds(20)), Is.True, "the hub closed without waiting for the held post");
            Assert.That(hubFailure, Is.Null);

            // The hub's descriptors are gone (or, the eventfd, kept for the held post): files opened now take the lowest
            // free numbers, which is where a closed eventfd's number would be reused.
            var files = Enumerable.Range(0, 8).Select(_ => OpenScratchFile()).ToList();
            var numbers = files.Select(f => (int)f.DangerousGetHandle()).ToList();
            release.Set();
            Assert.That(poster.Join(TimeSpan.FromSeconds(20)), Is.True);
            var lengths = files.Select(f => RandomAccess.GetLength(f)).ToList();
            foreach (var f in files) f.Dispose();
            Assert.That(lengths, Is.All.EqualTo(0),
                $"no stray bytes in a file opened after the hub closed (eventfd was {eventFd}; files got {string.Join(", ", numbers)})");
        }
        finally
        {
            release.Set();
            poster.Join(TimeSpan.FromSeconds(20));
        }
    }

    [Test]
    public unsafe void Posts_racing_hubs_that_close_never_write_a_descriptor_opened_since()
    {
        // Unforced: posters hammer whichever hub is current while hubs with a reactor are made, slept in and disposed one
        // after another, and eventfds opened right after each close take the freed numbers. None may ever count a write;
        // and every hub's eventfd is closed in the end, by the hub or by the last post that held it.
        Hub? current = null;
        bool stop = false;
        var posters = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                if (Volatile.Read(ref current) is { } hub) hub.PostItem(RunItem.ForCallback(static _ => { }, null));
                Thread.SpinWait(50);
            }
        })).ToList();
        var eventFds = new List<SharedEventFd>();
        var opened = new List<int>();
        posters.ForEach(t => t.Start());
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3);
            for (int i = 0; i < 400 && DateTime.UtcNow < deadline; i++)
            {
                var hub = new Hub(); // bound to this thread until disposed
                eventFds.Add(hub.Reactor!.EventFd);
                Volatile.Write(ref current, hub);
                for (int k = 0; k < 3; k++) Green.Sleep(1); // asleep in epoll: posts write the eventfd
                hub.Dispose();
                for (int k = 0; k < 2; k++)
                {
                    int fd = Epoll.EventFd(0, Epoll.CloseOnExec | Epoll.NonBlock);
                    Assert.That(fd, Is.GreaterThanOrEqualTo(0));
                    opened.Add(fd);
                }
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            posters.ForEach(t => t.Join(TimeSpan.FromSeconds(20)));
        }
        var counted = new List<int>();
        foreach (int fd in opened)
        {
            ulong count = 0;
            if (Epoll.Read(fd, &count, sizeof(ulong)) == sizeof(ulong)) counted.Add(fd);
            Epoll.Close(fd);
        }
        Assert.Multiple(() =>
        {
            Assert.That(counted, Is.Empty, $"eventfds opened after a hub closed that received a stray write ({opened.Count} opened, {eventFds.Count} hubs)");
            Assert.That(eventFds.Where(e => e.IsOpen), Is.Empty, "every hub's eventfd is closed once no post holds it");
        });
    }
}
