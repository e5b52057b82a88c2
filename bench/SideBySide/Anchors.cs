using System.Diagnostics;

namespace GreenRuntime.SideBySide;

/// <summary>Finds (and if needed installs) the gevent and Go anchor programs of ../shared/bench.</summary>
internal sealed class Anchors
{
    public string? GeventDir { get; private init; }
    public string? GoBinary { get; private init; }
    public string? GeventMissing { get; private init; }
    public string? GoMissing { get; private init; }

    private const string Python = "/usr/bin/python3";

    public static Anchors Locate(string repo)
    {
        var bench = new[] { Path.Combine(repo, "..", "shared", "bench"), Path.Combine(repo, "shared", "bench") }
            .Select(Path.GetFullPath).FirstOrDefault(Directory.Exists);
        if (bench == null)
        {
            const string why = "the anchor programs (../shared/bench) are not next to this repository";
            Console.WriteLine($"! gevent and Go columns skipped: {why}");
            return new Anchors { GeventMissing = why, GoMissing = why };
        }

        string? geventMissing = null, goMissing = null, goBinary = null;
        if (!Harness.Succeeds(Python, "-c \"import gevent\"") && !AptInstall("python3-gevent"))
            geventMissing = "python3-gevent is not installed and apt-get could not install it";
        if (!File.Exists("/usr/bin/go") && !AptInstall("golang-go"))
            goMissing = "golang-go is not installed and apt-get could not install it";
        if (goMissing == null)
        {
            goBinary = Path.Combine(Path.GetTempPath(), "greenruntime-anchors-go");
            var build = Harness.Run("/usr/bin/go", $"build -o {goBinary} .", Path.Combine(bench, "go"), TimeSpan.FromMinutes(5),
                ("GOFLAGS", "-mod=mod"), ("GOCACHE", Path.Combine(Path.GetTempPath(), "greenruntime-gocache")));
            if (build.ExitCode != 0)
            {
                goMissing = "go build of the anchor failed: " + build.Error.Trim();
                goBinary = null;
            }
        }
        if (geventMissing != null) Console.WriteLine($"! gevent column skipped: {geventMissing}");
        if (goMissing != null) Console.WriteLine($"! Go column skipped: {goMissing}");
        return new Anchors
        {
            GeventDir = geventMissing == null ? Path.Combine(bench, "gevent") : null,
            GoBinary = goBinary,
            GeventMissing = geventMissing,
            GoMissing = goMissing,
        };
    }

    public ProcessResult RunGevent(string script, string args) =>
        Harness.Run(Python, $"{Path.Combine(GeventDir!, script)} {args}", GeventDir!, TimeSpan.FromMinutes(3));

    public ProcessResult RunGo(string args) =>
        Harness.Run(GoBinary!, args, Path.GetDirectoryName(GoBinary)!, TimeSpan.FromMinutes(3), ("GOMAXPROCS", "1"));

    public Process? StartGevent(string script, string args) =>
        Harness.StartServer(Python, $"{Path.Combine(GeventDir!, script)} {args}", GeventDir!);

    public Process? StartGo(string args) =>
        Harness.StartServer(GoBinary!, args, Path.GetDirectoryName(GoBinary)!, ("GOMAXPROCS", "1"));

    private static bool AptInstall(string package)
    {
        Console.WriteLine($"  installing {package} with apt-get ...");
        if (!File.Exists("/usr/bin/apt-get")) return false;
        Harness.Run("/usr/bin/apt-get", "update -qq", "/", TimeSpan.FromMinutes(5));
        var install = Harness.Run("/usr/bin/apt-get", $"install -y -qq {package}", "/", TimeSpan.FromMinutes(10), ("DEBIAN_FRONTEND", "noninteractive"));
        return install.ExitCode == 0;
    }
}

internal sealed record ProcessResult(int ExitCode, string Output, string Error);
