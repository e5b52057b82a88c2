using System.Diagnostics;

namespace GreenRuntime.SideBySide;

/// <summary>
/// Locates the gevent and Go anchor programs, all of which live in this repository (bench/SideBySide/anchors), and
/// installs gevent and Go with apt when they are missing. A column is skipped with a printed reason when its
/// system cannot be had.
/// </summary>
internal sealed class Anchors
{
    /// <summary>The gevent anchor scripts (anchors/*.py); null when gevent is missing.</summary>
    public string? GeventDir { get; private init; }
    /// <summary>The Go anchor (anchors/go), built; null when Go is missing or the build failed.</summary>
    public string? GoBinary { get; private init; }
    /// <summary>Whether Debian's python3-gevent is importable.</summary>
    public bool HasGevent { get; private init; }
    /// <summary>The Go HTTP server (anchors/http_server.go), built; null when Go is missing.</summary>
    public string? GoHttpBinary { get; private init; }
    /// <summary>The anchor programs: bench/SideBySide/anchors.</summary>
    public required string LocalDir { get; init; }
    public string? GeventMissing { get; private init; }
    public string? GoMissing { get; private init; }

    private const string Python = "/usr/bin/python3";

    public static Anchors Locate(string repo)
    {
        var localDir = Path.Combine(repo, "bench", "SideBySide", "anchors");
        string? geventMissing = null, goMissing = null, goBinary = null, goHttpBinary = null;
        if (!Harness.Succeeds(Python, "-c \"import gevent\"") && !AptInstall("python3-gevent"))
            geventMissing = "python3-gevent is not installed and apt-get could not install it";
        if (!File.Exists("/usr/bin/go") && !AptInstall("golang-go"))
            goMissing = "golang-go is not installed and apt-get could not install it";
        var goCache = ("GOCACHE", Path.Combine(Path.GetTempPath(), "greenruntime-gocache"));
        if (goMissing == null)
        {
            // A single-file program with no dependencies: builds outside any module, no go.mod needed.
            goHttpBinary = Path.Combine(Path.GetTempPath(), "greenruntime-anchors-go-http");
            var build = Harness.Run("/usr/bin/go", $"build -o {goHttpBinary} http_server.go", localDir, TimeSpan.FromMinutes(5), goCache);
            if (build.ExitCode != 0)
            {
                Console.WriteLine($"! Go HTTP column skipped: go build of anchors/http_server.go failed: {build.Error.Trim()}");
                goHttpBinary = null;
            }

            // The other Go rows: one module (anchors/go) with no dependencies beyond the standard library.
            goBinary = Path.Combine(Path.GetTempPath(), "greenruntime-anchors-go");
            build = Harness.Run("/usr/bin/go", $"build -o {goBinary} .", Path.Combine(localDir, "go"), TimeSpan.FromMinutes(5), goCache);
            if (build.ExitCode != 0)
            {
                goMissing = "go build of anchors/go failed: " + build.Error.Trim();
                goBinary = null;
            }
        }
        if (geventMissing != null) Console.WriteLine($"! gevent column skipped: {geventMissing}");
        if (goMissing != null) Console.WriteLine($"! Go column skipped: {goMissing}");
        return new Anchors
        {
            LocalDir = localDir,
            GeventDir = geventMissing == null ? localDir : null,
            HasGevent = geventMissing == null,
            GoBinary = goBinary,
            GoHttpBinary = goHttpBinary,
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

    /// <summary>Runs one of the harness's own gevent scripts (anchors/*.py) to completion.</summary>
    public ProcessResult RunLocalGevent(string script, string args) =>
        Harness.Run(Python, $"{Path.Combine(LocalDir, script)} {args}", LocalDir, TimeSpan.FromMinutes(3));

    /// <summary>Starts one of the harness's own gevent scripts (anchors/*.py).</summary>
    public Process? StartLocalGevent(string script, string args) =>
        Harness.StartServer(Python, $"{Path.Combine(LocalDir, script)} {args}", LocalDir);

    /// <summary>Starts the harness's own Go HTTP server, on one thread like the other Go figures.</summary>
    public Process? StartGoHttp(string args) => StartGoHttp(args, 1);

    /// <summary>Starts the harness's own Go HTTP server with <paramref name="threads"/> as GOMAXPROCS.</summary>
    public Process? StartGoHttp(string args, int threads) =>
        GoHttpBinary == null ? null : Harness.StartServer(GoHttpBinary, args, LocalDir, ("GOMAXPROCS", threads.ToString(System.Globalization.CultureInfo.InvariantCulture)));

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
