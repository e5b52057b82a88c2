namespace GreenRuntime;

public static partial class Green
{
    /// <summary>
    /// Writes <see cref="Hub.FormatRunInfo"/> of the calling thread's hub to <see cref="Console.Out"/>: every live
    /// greenlet with its state, what it waits for and its parent, then the carrier pool. gevent's
    /// <c>gevent.util.print_run_info()</c>.
    /// </summary>
    /// <example>
    /// <code>
    /// Green.Spawn(() => Green.Sleep(1000), "sleeper");
    /// Green.Sleep(10);
    /// Green.PrintRunInfo();
    /// </code>
    /// </example>
    public static void PrintRunInfo() => Console.Out.Write(Hub.Current.FormatRunInfo());
}
