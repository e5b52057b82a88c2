using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Diagnostics;

[TestFixture]
public class LoggingTests
{
    [Test]
    public void A_failed_greenlet_is_logged_like_gevent_with_its_exception()
    {
        var logs = new ListLoggerProvider();
        using (var hub = new Hub(new HubOptions { LoggerFactory = logs }))
        {
            var doomed = Green.Spawn(() => throw new InvalidOperationException("boom"), "doomed");
            doomed.Join();

            var entry = logs.Entries.Single(e => e.Level == LogLevel.Error);
            Assert.That(entry.Category, Is.EqualTo("GreenRuntime.Hub"));
            Assert.That(entry.EventId.Id, Is.EqualTo(1));
            Assert.That(entry.Message, Is.EqualTo($"<Greenlet doomed#{doomed.Id}> failed with InvalidOperationException"));
            Assert.That(entry.Exception, Is.SameAs(doomed.Exception));
            Assert.That(entry.State, Does.Contain(new KeyValuePair<string, object?>("Greenlet", doomed.ToString())));
            Assert.That(entry.State, Does.Contain(new KeyValuePair<string, object?>("{OriginalFormat}", "{Greenlet} failed with {ExceptionType}")));
        }
    }

    [Test]
    public void A_killed_greenlet_is_not_a_failure_and_is_not_logged()
    {
        var logs = new ListLoggerProvider();
        using var hub = new Hub(new HubOptions { LoggerFactory = logs });
        var g = Green.Spawn(() => Green.Sleep(TimeSpan.FromSeconds(30)), "victim");
        Green.Sleep(0);
        g.Kill();
        Assert.That(logs.Entries.Where(e => e.Level >= LogLevel.Warning), Is.Empty);
    }
}
