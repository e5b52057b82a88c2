using System.Net;
using System.Net.Mail;
using System.Net.Sockets;
using System.Text;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// The acceptance test of Patch.All: unmodified blocking code in 50 greenlets against servers that answer
/// after 200 ms finishes in about the time of one call (bound: 3x one call), where in sequence it takes 50x.
/// </summary>
[TestFixture]
public class LegacyDropInTests : PatchedHubTest
{
    private const int Greenlets = 50;
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(200);

    private static void AssertConcurrent(string what, TimeSpan one, TimeSpan all)
    {
        TestContext.Out.WriteLine($"{what}: one call {one.TotalMilliseconds:F0} ms, {Greenlets} greenlets {all.TotalMilliseconds:F0} ms (sequential would be ~{Greenlets * one.TotalMilliseconds:F0} ms)");
        // The bound is 3x one call; one call is at least the server's 200 ms delay.
        Assert.That(all, Is.LessThan(3 * (one > Delay ? one : Delay)), $"{what} did not run concurrently");
    }

    [Test]
    public void ThreadSleep()
    {
        var one = Time(() => Thread.Sleep(Delay));
        var all = RunInGreenlets(Greenlets, _ => Thread.Sleep(200));
        AssertConcurrent("Thread.Sleep", one, all);
    }

    [Test]
    public void TcpClientNetworkStreamStreamReader()
    {
        using var server = SlowServer.Line(Delay);
        string Call()
        {
            using var client = new TcpClient("127.0.0.1", server.Port);
            using var reader = new StreamReader(client.GetStream());
            return reader.ReadLine()!;
        }
        var one = Time(() => Assert.That(Call(), Is.EqualTo("hello")));
        var lines = new string[Greenlets];
        var all = RunInGreenlets(Greenlets, i => lines[i] = Call());
        Assert.That(lines, Has.All.EqualTo("hello"));
        AssertConcurrent("TcpClient+StreamReader.ReadLine", one, all);
    }

    [Test]
    public void HttpClientSendSync()
    {
        using var server = SlowServer.Http(Delay);
        using var http = new HttpClient();
        string Call()
        {
            using var response = http.Send(new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{server.Port}/"));
            using var reader = new StreamReader(response.Content.ReadAsStream());
            return reader.ReadToEnd();
        }
        var one = Time(() => Assert.That(Call(), Is.EqualTo("hello")));
        var bodies = new string[Greenlets];
        var all = RunInGreenlets(Greenlets, i => bodies[i] = Call());
        Assert.That(bodies, Has.All.EqualTo("hello"));
        AssertConcurrent("HttpClient.Send", one, all);
    }

    [Test]
    public void HttpClientGetStringAsyncResult()
    {
        using var server = SlowServer.Http(Delay);
        using var http = new HttpClient();
        var url = $"http://127.0.0.1:{server.Port}/";
        var one = Time(() => Assert.That(http.GetStringAsync(url).Result, Is.EqualTo("hello")));
        var bodies = new string[Greenlets];
        var all = RunInGreenlets(Greenlets, i => bodies[i] = http.GetStringAsync(url).Result);
        Assert.That(bodies, Has.All.EqualTo("hello"));
        AssertConcurrent("HttpClient.GetStringAsync().Result", one, all);
    }

    [Test]
    public void WebClientDownloadString()
    {
        using var server = SlowServer.Http(Delay);
        var url = $"http://127.0.0.1:{server.Port}/";
#pragma warning disable SYSLIB0014 // WebClient is obsolete: exactly the legacy code this is about
        string Call()
        {
            using var web = new WebClient();
            return web.DownloadString(url);
        }
#pragma warning restore SYSLIB0014
        var one = Time(() => Assert.That(Call(), Is.EqualTo("hello")));
        var bodies = new string[Greenlets];
        var all = RunInGreenlets(Greenlets, i => bodies[i] = Call());
        Assert.That(bodies, Has.All.EqualTo("hello"));
        AssertConcurrent("WebClient.DownloadString", one, all);
    }

    [Test]
    public void SmtpClientSend()
    {
        using var server = SlowServer.Smtp(Delay);
        void Call()
        {
            using var smtp = new SmtpClient("127.0.0.1", server.Port);
            smtp.Send("from@example.com", "to@example.com", "subject", "body");
        }
        var one = Time(Call);
        var all = RunInGreenlets(Greenlets, _ => Call());
        AssertConcurrent("SmtpClient.Send", one, all);
    }

    [Test]
    public void DnsGetHostEntryLocalhost()
    {
        var expected = Dns.GetHostEntry("localhost").AddressList.Select(a => a.ToString()).Order().ToList();
        var results = new List<string>[Greenlets];
        RunInGreenlets(Greenlets, i => results[i] = Dns.GetHostEntry("localhost").AddressList.Select(a => a.ToString()).Order().ToList());
        Assert.That(results, Has.All.EqualTo(expected));
    }

    [Test]
    public void FileReadAllBytesOfALargeFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"greenruntime-patch-{Guid.NewGuid():N}.bin");
        var content = new byte[8 << 20];
        new Random(42).NextBytes(content);
        File.WriteAllBytes(path, content);
        try
        {
            var results = new byte[20][];
            RunInGreenlets(results.Length, i => results[i] = File.ReadAllBytes(path));
            // SequenceEqual: NUnit's element-wise collection comparison of 160 MB takes about a minute.
            Assert.That(results.Select(r => r.AsSpan().SequenceEqual(content)), Has.All.True);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void MixedLegacyCallsShareStateWithoutLocks()
    {
        // The baton invariant: between two blocking calls a greenlet runs alone, so a non-atomic
        // read-modify-write with a pause in the middle never loses an update, with no lock.
        using var server = SlowServer.Line(TimeSpan.FromMilliseconds(20));
        int counter = 0;
        RunInGreenlets(Greenlets, i =>
        {
            for (int round = 0; round < 3; round++)
            {
                if ((i + round) % 2 == 0) Thread.Sleep(10);
                else
                {
                    using var client = new TcpClient("127.0.0.1", server.Port);
                    new StreamReader(client.GetStream()).ReadLine();
                }
                int before = counter;
                Thread.SpinWait(2000);
                counter = before + 1;
            }
        });
        Assert.That(counter, Is.EqualTo(3 * Greenlets));
    }
}
