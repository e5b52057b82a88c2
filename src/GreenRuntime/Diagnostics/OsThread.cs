using System.Runtime.InteropServices;

namespace GreenRuntime.Diagnostics;

/// <summary>The calling thread's OS id (Linux TID), cached per thread: the blocking monitor needs it to find the
/// blocked thread in a crash report. 0 where unknown (not Linux x64/arm64).</summary>
internal static class OsThread
{
    [ThreadStatic] private static int t_id;

    public static int CurrentId
    {
        get
        {
            int id = t_id;
            return id != 0 ? id : t_id = Read();
        }
    }

    private static int Read()
    {
        if (!OperatingSystem.IsLinux()) return -1;
        long nr = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 186,  // SYS_gettid
            Architecture.Arm64 => 178,
            _ => -1,
        };
        if (nr < 0) return -1;
        try
        {
            return (int)Syscall(nr);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return -1;
        }
    }

    [DllImport("libc", EntryPoint = "syscall")]
    [SuppressGCTransition]
    private static extern long Syscall(long number);
}
