using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// <see cref="HttpListener.GetContext"/> on greenlets: a wait for the next request that a timeout or kill abandoned stays
/// queued in the listener, which cannot withdraw it; the next GetContext gets it, so the request it receives is served.
/// Before, that request went to the dead wait, and a GetContext loop under a short timeout never answered again.
/// </summary>
public class HttpListenerTests : PatchedHubTest
{
    private static HttpListener Start(out string prefix)
    {
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            prefix = $"http://127.0.0.1:{((IPEndPoint)probe.LocalEndpoint).Port}/";
        }
        var listener = new HttpListener();
        listener.Prefixes.Add(prefix);
        listener.Start();
        return listener;
    }

    private static void Answer(HttpListenerContext context)
    {
        var body = System.Text.Encoding.UTF8.GetBytes(context.Request.Url!.AbsolutePath);
        context.Response.ContentLength64 = body.Length;
        context.Response.OutputStream.Write(body);
        context.Response.Close();
    }

    /// <summary>Requests <paramref name="count"/> paths one after another from a plain thread, <paramref name="gap"/>
    /// apart; returns what came back for each (or the error).</summary>
    private static List<string> RequestFromAThread(string prefix, int count, TimeSpan gap)
    {
        var answers = new List<string>();
        var client = new Thread(() =>
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
            for (int i = 0; i < count; i++)
            {
                Thread.Sleep(gap);
                try
                {
                    answers.Add(http.GetStringAsync($"{prefix}r{i}").GetAwaiter().GetResult());
                }
                catch (Exception e)
                {
                    answers.Add($"r{i} failed: {e.GetType().Name}");
                }
            }
        });
        client.Start();
        while (client.IsAlive) Green.Sleep(10);
        return answers;
    }

    [Test]
    public void AGetContextLoopUnderAShortTimeoutServesEveryRequest()
    {
        using var listener = Start(out var prefix);
        bool stop = false;
        var server = Green.Spawn(() =>
        {
            while (!stop)
            {
                var context = Green.WithTimeout(TimeSpan.FromMilliseconds(40), () => listener.GetContext(), null);
                if (context is not null) Answer(context);
            }
        });
        var answers = RequestFromAThread(prefix, 6, TimeSpan.FromMilliseconds(100));
        stop = true;
        server.Join(TimeSpan.FromSeconds(5));
        Assert.That(answers, Is.EqualTo(Enumerable.Range(0, 6).Select(i => $"/r{i}")));
    }

    [Test]
    public void AKilledAcceptGreenletsWaitIsTakenOverByTheNext()
    {
        using var listener = Start(out var prefix);
        Greenlet? server = null;
        void Serve() => server = Green.Spawn(() =>
        {
            while (true) Answer(listener.GetContext());
        });
        Serve();
        var restarter = Green.Spawn(() =>
        {
            while (true)
            {
                Green.Sleep(150);
                server!.Kill();
                Serve();
            }
        });
        var answers = RequestFromAThread(prefix, 6, TimeSpan.FromMilliseconds(70));
        restarter.Kill();
        server!.Kill();
        Assert.That(answers, Is.EqualTo(Enumerable.Range(0, 6).Select(i => $"/r{i}")));
    }

    /// <summary>What a GetContext waiting while another caller stops the listener ends with.</summary>
    private static string StoppedWhileWaiting(bool onGreenlet)
    {
        using var listener = Start(out _);
        string outcome = "";
        void Wait()
        {
            try
            {
                listener.GetContext();
                outcome = "returned";
            }
            catch (Exception e)
            {
                outcome = e is HttpListenerException h ? $"{e.GetType().Name} {h.ErrorCode}" : e.GetType().Name;
            }
        }
        if (onGreenlet)
        {
            var waiter = Green.Spawn(Wait);
            Green.Sleep(200);
            listener.Stop();
            waiter.Join(TimeSpan.FromSeconds(10));
        }
        else
        {
            var waiter = new Thread(Wait);
            waiter.Start();
            Thread.Sleep(200);
            listener.Stop();
            waiter.Join(TimeSpan.FromSeconds(10));
        }
        return outcome;
    }

    [Test]
    public void AGetContextWaitingWhenTheListenerStopsFailsAsAThreadsDoes()
    {
        // The loop `try { ctx = listener.GetContext(); } catch (HttpListenerException) { break; }` ends a server; on a
        // greenlet the wait ended with ObjectDisposedException, which escaped it.
        string onThread = StoppedWhileWaiting(onGreenlet: false);
        Assert.That(onThread, Is.EqualTo("HttpListenerException 500"));
        Assert.That(StoppedWhileWaiting(onGreenlet: true), Is.EqualTo(onThread));
    }

    [Test]
    public void AnAbandonedWaitThatFailedWhenTheListenerStoppedDoesNotFailTheNextGetContextAfterARestart()
    {
        using var listener = Start(out var prefix);
        Assert.That(Green.WithTimeout(TimeSpan.FromMilliseconds(50), () => listener.GetContext(), null), Is.Null);
        listener.Stop(); // the kept wait fails now, with nobody waiting for it
        listener.Start();
        var server = Green.Spawn(() =>
        {
            while (true) Answer(listener.GetContext());
        });
        var answers = RequestFromAThread(prefix, 2, TimeSpan.FromMilliseconds(20));
        server.Kill();
        Assert.That(answers, Is.EqualTo(new[] { "/r0", "/r1" }));
    }

    [Test]
    public void AnAbandonedWaitThatFailsOnlyAfterTheRestartedListenersNextGetContextTookItIsDropped()
    {
        // The stop fails the kept wait a moment later, on another thread (here after the pool is let go): the restarted
        // listener's GetContext had already taken it to wait for, and threw the stop's failure, ending the server loop.
        using var listener = Start(out var prefix);
        Assert.That(Green.WithTimeout(TimeSpan.FromMilliseconds(50), () => listener.GetContext(), null), Is.Null);
        Greenlet server;
        using (new HeldThreadPool())
        {
            listener.Stop();
            listener.Start();
            server = Green.Spawn(() =>
            {
                while (true) Answer(listener.GetContext());
            });
            Green.Sleep(50); // the server waits for the kept wait, which has not failed yet
        }
        var answers = RequestFromAThread(prefix, 2, TimeSpan.FromMilliseconds(20));
        Assert.That(server.Dead, Is.False, "the server loop goes on");
        server.Kill();
        Assert.That(answers, Is.EqualTo(new[] { "/r0", "/r1" }));
    }
}
