using Microsoft.Extensions.Logging;

namespace GreenRuntime;

/// <summary>Which patch sets <see cref="Patch.All"/> applies, and where it logs. Every set is on by default.</summary>
public sealed class PatchOptions
{
    /// <summary><c>Thread.Sleep</c>, <c>Thread.Yield</c>. Default true.</summary>
    public bool Time { get; init; } = true;

    /// <summary>Synchronous <c>Socket</c> operations (and so NetworkStream, TcpClient, HttpClient.Send...). Default true.</summary>
    public bool Sockets { get; init; } = true;

    /// <summary>Synchronous <c>Dns</c> lookups. Default true.</summary>
    public bool Dns { get; init; } = true;

    /// <summary>Synchronous file reads and writes (what would wait for the disk runs on the thread pool), <c>File.Copy</c>,
    /// and console writes that would wait for a pipe's reader (run with the hub's baton released). Default true.</summary>
    public bool Files { get; init; } = true;

    /// <summary><c>Task.Wait</c>, <c>Result</c>, <c>GetAwaiter().GetResult()</c>, <c>WaitAll</c>, <c>WaitAny</c>. Default true.</summary>
    public bool Tasks { get; init; } = true;

    /// <summary><c>SemaphoreSlim</c>, <c>ManualResetEventSlim</c>, <c>WaitHandle.WaitOne/WaitAny/WaitAll</c>, <c>Thread.Join</c>. Default true.</summary>
    public bool Threading { get; init; } = true;

    /// <summary>Contended <c>lock</c>/<c>Monitor.Enter</c>, <c>Monitor.Wait</c>, <c>Lock</c>, and waits for another thread's class initialisation: the baton is released around them. Default true.</summary>
    public bool Locks { get; init; } = true;

    /// <summary><c>Process.WaitForExit</c>. Default true.</summary>
    public bool Processes { get; init; } = true;

    /// <summary><c>Console.ReadLine</c>, <c>Console.Read</c>. Default true.</summary>
    public bool Stdin { get; init; } = true;

    /// <summary>
    /// Where patching logs (category <c>GreenRuntime.Patch</c>, event ids 100–199). Default null: the calling
    /// thread's hub's <see cref="HubOptions.LoggerFactory"/> if it has a hub, otherwise no logging.
    /// </summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}
