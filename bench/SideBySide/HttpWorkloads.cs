using System.Net;
using System.Text;
using GreenRuntime.Servers;

namespace GreenRuntime.SideBySide;

/// <summary>
/// The HTTP workload's two .NET servers, both running the same "legacy" handler — a blocking 20 ms wait (standing
/// for a database call) and a small fixed body:
/// <list type="bullet">
/// <item><see cref="GreenServer"/>: GreenRuntime's <see cref="HttpServer"/> under <see cref="Patch.All"/>, so the
/// handler's <c>Thread.Sleep</c> parks only its connection's greenlet (gevent's pywsgi + monkey.patch_all).</item>
/// <item><see cref="ThreadPoolServer"/>: the classic alternative, <see cref="HttpListener"/> with each request run on
/// a thread-pool thread, where the same <c>Thread.Sleep</c> holds that thread for 20 ms.</item>
/// </list>
/// gevent's and Go's versions of the handler are in anchors/http_server.py and anchors/http_server.go.
/// Both servers print READY when listening and exit on their own after <see cref="Lifetime"/>, like the anchors.
/// </summary>
internal static class HttpWorkloads
{
    public const int HandlerSleepMs = 20;
    private static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(120);

    /// <summary>The same ~100-byte body every server sends (with Content-Length, so the load client can frame it).</summary>
    public static readonly byte[] Body = Encoding.ASCII.GetBytes("hello from a blocking handler: it slept 20 ms, as a database call would\n" + new string('.', 27) + "\n");

    /// <summary>Blocking code, unchanged: nothing here knows about greenlets.</summary>
    private static void LegacyHandler() => Thread.Sleep(HandlerSleepMs);

    public static Dictionary<string, double> GreenServer(int port)
    {
        Patch.All();
        using var server = new HttpServer(new IPEndPoint(IPAddress.Loopback, port), Handle, new HttpServerOptions { Backlog = 1024 });
        server.Start();
        Console.WriteLine("READY");
        Console.Out.Flush();
        Green.Sleep(Lifetime);
        server.Stop();
        return new();
    }

    /// <summary>The same server on a <see cref="HubGroup"/> of <paramref name="hubs"/> hubs (0: one per CPU), started from a
    /// plain thread: each hub accepts on its own SO_REUSEPORT listener. <paramref name="pinned"/>: each hub and its
    /// carriers on one CPU (<see cref="HubGroupOptions.PinHubsToCpus"/>).</summary>
    public static Dictionary<string, double> GreenServerOnEveryCore(int port, int hubs, bool pinned)
    {
        Patch.All();
        using var group = new HubGroup(new HubGroupOptions
        {
            HubCount = hubs,
            PinHubsToCpus = pinned,
            Hub = new HubOptions { MaxBlockingTime = null },
        });
        using var server = new HttpServer(new IPEndPoint(IPAddress.Loopback, port), Handle, new HttpServerOptions { Backlog = 1024, Hubs = group });
        server.Start();
        Console.WriteLine("READY");
        Console.Out.Flush();
        Thread.Sleep(Lifetime);
        server.Stop();
        return new();
    }

    private static void Handle(HttpContext ctx)
    {
        if (ctx.Request.Path == "/stats")
        {
            // For the idle-connections row: the managed heap after a full collection, which RSS cannot separate
            // from garbage and the GC's reserve; and the GC's committed bytes, which is what RSS follows.
            long heap = GC.GetTotalMemory(forceFullCollection: true);
            ctx.Response.Write($"heap={heap} committed={GC.GetGCMemoryInfo().TotalCommittedBytes}\n");
            return;
        }
        LegacyHandler();
        ctx.Response.ContentType = "text/plain";
        ctx.Response.Write(Body);
    }

    public static Dictionary<string, double> ThreadPoolServer(int port)
    {
        using var listener = new HttpListener();
        listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        listener.Start();
        // The accept loop is the usual blocking GetContext; the main thread only bounds the server's life.
        var acceptor = new Thread(() =>
        {
            while (true)
            {
                HttpListenerContext ctx;
                try
                {
                    ctx = listener.GetContext();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
                {
                    return; // the listener was closed at the end of the lifetime
                }
                ThreadPool.UnsafeQueueUserWorkItem(static c =>
                {
                    try
                    {
                        LegacyHandler();
                        c.Response.ContentType = "text/plain";
                        c.Response.ContentLength64 = Body.Length;
                        c.Response.OutputStream.Write(Body);
                        c.Response.Close();
                    }
                    catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException)
                    {
                        // The client went away (the load client cancels what is in flight at its deadline);
                        // an unhandled exception here would take the whole server down.
                    }
                }, ctx, preferLocal: false);
            }
        }) { IsBackground = true, Name = "HttpListener accept loop" };
        acceptor.Start();
        Console.WriteLine("READY");
        Console.Out.Flush();
        Thread.Sleep(Lifetime);
        listener.Close();
        return new();
    }
}
