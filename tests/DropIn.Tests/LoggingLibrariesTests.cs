using System.Text.RegularExpressions;
using Serilog;

namespace DropIn.Tests;

/// <summary>
/// log4net, NLog and Serilog writing one file from 30 greenlets, unmodified. Each serialises its appends with a lock
/// and writes (and flushes) the file while holding it; under Patch.All the file write parks the greenlet, so the next
/// greenlet that logs meets a lock held across a park and waits for it with the baton released. Every line must
/// arrive whole and exactly once, and the greenlets' sleeps between lines must still overlap.
/// </summary>
public partial class LoggingLibrariesTests : DropInTest
{
    private const int LinesPerGreenlet = 5;

    private string _directory = null!;

    [SetUp]
    public void CreateDirectory() => _directory = Directory.CreateTempSubdirectory("dropin-logging").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_directory, recursive: true);

    [Test]
    public void Log4NetFileAppender()
    {
        var path = Path.Combine(_directory, "log4net.log");
        var repository = log4net.LogManager.CreateRepository($"dropin-{Guid.NewGuid():N}");
        var appender = new log4net.Appender.FileAppender
        {
            File = path,
            Layout = new log4net.Layout.PatternLayout("%message%newline"),
            ImmediateFlush = true,
        };
        appender.ActivateOptions();
        log4net.Config.BasicConfigurator.Configure(repository, appender);
        var logger = log4net.LogManager.GetLogger(repository.Name, "dropin");
        LogFromGreenlets("log4net FileAppender", line => logger.Info(line), repository.Shutdown, path);
    }

    [Test]
    public void NLogFileTarget()
    {
        var path = Path.Combine(_directory, "nlog.log");
        var factory = new NLog.LogFactory();
        var configuration = new NLog.Config.LoggingConfiguration(factory);
        configuration.AddRuleForAllLevels(new NLog.Targets.FileTarget("file") { FileName = path, Layout = "${message}", AutoFlush = true });
        factory.Configuration = configuration;
        var logger = factory.GetLogger("dropin");
        LogFromGreenlets("NLog FileTarget", line => logger.Info(line), factory.Shutdown, path);
    }

    [Test]
    public void SerilogFileSink()
    {
        var path = Path.Combine(_directory, "serilog.log");
        var logger = new LoggerConfiguration().WriteTo.File(path, outputTemplate: "{Message:l}{NewLine}").CreateLogger();
        LogFromGreenlets("Serilog File sink", line => logger.Information("{Line:l}", line), logger.Dispose, path);
    }

    /// <summary>Each greenlet logs <see cref="LinesPerGreenlet"/> lines with a patched sleep after each (one server wait
    /// in all); afterwards the file must hold every line of every round exactly once.</summary>
    private static void LogFromGreenlets(string what, Action<string> log, Action close, string path)
    {
        int rounds = 0;
        RunConcurrently(what, i =>
        {
            int round = Volatile.Read(ref rounds);
            for (int line = 0; line < LinesPerGreenlet; line++)
            {
                log($"round {round} greenlet {i} line {line}");
                Thread.Sleep(ServerWait / LinesPerGreenlet); // patched: parks
            }
            return i;
        }, _ => Interlocked.Increment(ref rounds));
        close();

        var expected = from round in Enumerable.Range(0, rounds)
                       from i in Enumerable.Range(0, Greenlets)
                       from line in Enumerable.Range(0, LinesPerGreenlet)
                       select $"round {round} greenlet {i} line {line}";
        var written = File.ReadAllLines(path);
        Assert.That(written.Where(l => !LinePattern().IsMatch(l)), Is.Empty, "every line arrived whole");
        Assert.That(written, Is.EquivalentTo(expected), "every line exactly once");
    }

    [GeneratedRegex(@"^round \d+ greenlet \d+ line \d+$")]
    private static partial Regex LinePattern();
}
