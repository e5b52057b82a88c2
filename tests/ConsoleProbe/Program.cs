// Two probes of the console on greenlets, in a process whose stdin or stdout is a pipe the test holds.
//
// ConsoleProbe (no argument): prints "ready" once it waits for input, then, when a line arrived:
//   line=<the line read>|ticksWhileWaiting=<ticks of the other greenlet during Console.ReadLine>|readerFirst=<bool>
//   Exit codes: 0 = read a line; 1 = stdin ended without a line; 2 = Console.ReadLine was not patched.
//
// ConsoleProbe held-pool: the same with every thread-pool thread (and a few more) held in a blocking wait first, as
//   legacy code holds them.
//
// ConsoleProbe stdout LINES [files-only]: two writer greenlets each write LINES numbered lines of 100 bytes to Console.Out
// (more than a pipe holds) while a ticker greenlet sleeps 5 ms at a time (Green.Sleep); at the end it writes to stderr
//   written=<lines written>|maxTickerGapMs=<the longest the ticker waited for one of its sleeps>|patched=<bool>
//   files-only applies only the Files patch set (Patch.Files()) instead of Patch.All().
//
// ConsoleProbe abandoned-reads: two greenlets call Console.ReadLine under a 100 ms Green.WithTimeout and give up; then
// "ready" is printed, and one greenlet reads the next 4 lines and prints them as "lines=<a>,<b>,<c>,<d>" (each read
// abandoned by a timeout is kept for a later reader, oldest first: no line lost, none out of order).
//
// ConsoleProbe piped-lines: reads stdin to its end on one greenlet (the first character with Console.Read, then lines
//   with Console.ReadLine) while another greenlet yields in a loop, then prints
//   lines=<lines read>|ordered=<each line is the number of the one before plus one, from 0>|switches=<voluntary context
//   switches of the process's threads meanwhile: a read handed to the stdin thread costs two or more>|ticks=<the other
//   greenlet's turns>
//
// ConsoleProbe write-cost [unpatched]: what one Console.Out.Write of 41 bytes costs on a greenlet (best of 5 rounds
// of 300,000), written to stderr as "<patched|unpatched> <ns> ns per write"; stdout is wherever the caller sent it
// (| cat > /dev/null for a pipe).
//
// ConsoleProbe readkey: stdin must be a terminal. A greenlet calls Console.ReadKey(intercept: true) under a 100 ms
// Green.WithTimeout and gives up; then a reader greenlet reads two keys while a ticker greenlet ticks, printing "ready"
// on its first tick, and then
//   keys=<the two keys>|ticksWhileWaiting=<ticks of the ticker during the reads>|timedOut=<the first read timed out>
// (the read abandoned by the timeout is kept: the first key goes to the next ReadKey).
//
// ConsoleProbe exit-graceful: a greenlet calls Environment.Exit(3) while a worker greenlet polls a stop flag; the
// ProcessExit handler sets the flag and waits up to 5 s for the worker to say it stopped, then prints
//   stopped=<bool>|waitedMs=<ms>
using System.Diagnostics;
using GreenRuntime;

// "files-only": just the Files set, so that contended monitors are not cooperative; "unpatched": nothing.
var report = args.Contains("unpatched") ? null : args.Contains("files-only") ? Patch.Files() : Patch.All();
using var hub = new Hub();
return args switch
{
    ["stdout", var lines, ..] => WriteStdout(int.Parse(lines)),
    ["write-cost", ..] => WriteCost(),
    ["held-pool"] => ReadStdinWithThePoolHeld(),
    ["abandoned-reads"] => ReadAfterAbandonedReads(),
    ["piped-lines"] => ReadPipedLines(),
    ["exit-graceful"] => ExitGracefully(),
    ["readkey"] => ReadKeys(),
    _ => ReadStdin(),
};

int ReadStdin()
{
    if (report is null || !report.Patched.Any(p => p.Set == "Stdin"))
    {
        Console.WriteLine("stdin not patched: " + string.Join("; ", report?.Refused.Where(r => r.Set == "Stdin") ?? []));
        return 2;
    }
    int ticks = 0, ticksAtStart = -1, ticksAtEnd = -1;
    string? line = null;
    var reader = Green.Spawn(() =>
    {
        ticksAtStart = ticks;
        line = Console.ReadLine();
        ticksAtEnd = ticks;
    });
    var ticker = Green.Spawn(() =>
    {
        while (!reader.Ready)
        {
            Thread.Sleep(10);
            ticks++;
            if (ticks == 1) Console.WriteLine("ready"); // the reader has started its read by now: it ran first
        }
    });
    Green.JoinAll([reader, ticker], raiseError: true);
    Console.WriteLine($"line={line}|ticksWhileWaiting={ticksAtEnd - ticksAtStart}|readerFirst={ticksAtStart == 0}");
    return line is null ? 1 : 0;
}

int ReadPipedLines()
{
    int lines = 0, ticks = 0;
    bool ordered = true;
    long switchesBefore = VoluntarySwitches();
    var reader = Green.Spawn(() =>
    {
        int first = Console.Read();
        for (string? line = Console.ReadLine(); line != null; line = Console.ReadLine())
        {
            if (lines == 0) line = (char)first + line;
            ordered &= line == lines.ToString(System.Globalization.CultureInfo.InvariantCulture);
            lines++;
        }
    });
    Green.Spawn(() =>
    {
        while (!reader.Ready)
        {
            Green.Sleep(TimeSpan.Zero);
            ticks++;
        }
    });
    reader.Join();
    long switches = VoluntarySwitches() - switchesBefore;
    Console.WriteLine($"lines={lines}|ordered={ordered}|switches={switches}|ticks={ticks}");
    return reader.Exception is null ? 0 : 1;
}

// The voluntary context switches of every thread of this process so far (each thread's own count, in /proc).
static long VoluntarySwitches() =>
    Directory.GetDirectories("/proc/self/task").Sum(task =>
    {
        try
        {
            var line = File.ReadLines(Path.Combine(task, "status")).FirstOrDefault(l => l.StartsWith("voluntary_ctxt_switches:"));
            return line is null ? 0 : long.Parse(line["voluntary_ctxt_switches:".Length..].Trim());
        }
        catch (IOException)
        {
            return 0; // the thread ended meanwhile
        }
    });

int ReadAfterAbandonedReads()
{
    var abandoned = Enumerable.Range(0, 2)
        .Select(_ => Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => Console.ReadLine(), "timed out")))
        .ToList();
    Green.JoinAll(abandoned, raiseError: true);
    if (abandoned.Any(g => g.Get() != "timed out")) return 1;
    Console.WriteLine("ready");
    var lines = Green.Spawn(() => string.Join(",", Enumerable.Range(0, 4).Select(_ => Console.ReadLine())));
    Console.WriteLine("lines=" + lines.Get());
    return 0;
}

int ReadKeys()
{
    bool timedOut = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => Console.ReadKey(true).KeyChar, '-')).Get() == '-';
    int ticks = 0, ticksAtStart = -1, ticksAtEnd = -1;
    string keys = "";
    var reader = Green.Spawn(() =>
    {
        ticksAtStart = ticks;
        keys += Console.ReadKey(intercept: true).KeyChar;
        keys += Console.ReadKey(intercept: true).KeyChar;
        ticksAtEnd = ticks;
    });
    var ticker = Green.Spawn(() =>
    {
        while (!reader.Ready)
        {
            Thread.Sleep(10);
            if (++ticks == 1) Console.WriteLine("ready");
        }
    });
    Green.JoinAll([reader, ticker], raiseError: true);
    Console.WriteLine($"keys={keys}|ticksWhileWaiting={ticksAtEnd - ticksAtStart}|timedOut={timedOut}");
    return 0;
}

int ReadStdinWithThePoolHeld()
{
    ThreadPool.GetMinThreads(out int minimum, out _);
    using var release = new ManualResetEventSlim();
    var holders = Enumerable.Range(0, minimum + 8).Select(_ => Task.Run(() => release.Wait())).ToArray();
    try
    {
        return ReadStdin();
    }
    finally
    {
        release.Set();
        Task.WaitAll(holders);
    }
}

int WriteStdout(int lines)
{
    bool patched = report is not null && report.Patched.Any(p => p.Method.Name == "WriteFromConsoleStream");
    int written = 0, writing = 2;
    double maxGap = 0;
    // The ticker starts first, so a writer that held the hub would stop it in the middle of a sleep.
    var ticker = Green.Spawn(() =>
    {
        var clock = Stopwatch.StartNew();
        while (writing > 0)
        {
            var before = clock.Elapsed.TotalMilliseconds;
            Green.Sleep(5);
            maxGap = Math.Max(maxGap, clock.Elapsed.TotalMilliseconds - before);
        }
    });
    var writers = new[] { 'a', 'b' }.Select(tag => Green.Spawn(() =>
    {
        for (int i = 0; i < lines; i++)
        {
            Console.WriteLine($"{tag}{i:D8}{new string('.', 90)}"); // 100 bytes with the newline
            written++;
        }
        writing--;
    })).ToArray();
    Green.JoinAll([.. writers, ticker], raiseError: true);
    Console.Error.WriteLine($"written={written}|maxTickerGapMs={maxGap:F0}|patched={patched}");
    return 0;
}

int WriteCost()
{
    const int Writes = 300_000;
    double best = double.MaxValue;
    Green.Spawn(() =>
    {
        for (int round = 0; round < 5; round++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < Writes; i++) Console.Out.Write("0123456789012345678901234567890123456789\n");
            best = Math.Min(best, clock.Elapsed.TotalMilliseconds * 1e6 / Writes);
        }
    }).Join();
    Console.Error.WriteLine($"{(report is null ? "unpatched" : "patched")} {best:F0} ns per write");
    return 0;
}

int ExitGracefully()
{
    bool stop = false;
    using var stopped = new ManualResetEventSlim();
    AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        var watch = Stopwatch.StartNew();
        stop = true;
        bool ok = stopped.Wait(5000);
        Console.WriteLine($"stopped={ok}|waitedMs={watch.ElapsedMilliseconds}");
    };
    var worker = Green.Spawn(() =>
    {
        while (!stop) Thread.Sleep(10);
        stopped.Set();
    });
    Green.Spawn(() =>
    {
        Thread.Sleep(50);
        Environment.Exit(3);
    });
    worker.Join();
    Thread.Sleep(Timeout.Infinite); // the exit ends the process
    return 1;
}
