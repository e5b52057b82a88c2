// Prints "ready" once it waits for input, then, when a line arrived:
//   line=<the line read>|ticksWhileWaiting=<ticks of the other greenlet during Console.ReadLine>|readerFirst=<bool>
// Exit codes: 0 = read a line; 1 = stdin ended without a line; 2 = Console.ReadLine was not patched.
using GreenRuntime;

var report = Patch.All();
if (!report.Patched.Any(p => p.Set == "Stdin"))
{
    Console.WriteLine("stdin not patched: " + string.Join("; ", report.Refused.Where(r => r.Set == "Stdin")));
    return 2;
}

using var hub = new Hub();
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
