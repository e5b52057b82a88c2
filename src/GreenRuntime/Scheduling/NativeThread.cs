// Starting carrier threads with pthread_create instead of System.Threading.Thread (Linux).
//
// Thread.Start returns only once the new thread runs: the runtime creates the OS thread, then blocks its creator
// until the thread has set itself up as a managed thread. A hub that rents from an empty carrier pool holds the
// baton meanwhile. A thread created with pthread_create and entered through an [UnmanagedCallersOnly] method sets
// itself up as a managed thread on its first managed call, on its own CPU time, while the creator goes on.
// Measured here, 1,000 threads of 256 KiB parked on an event: the creator was busy 80–84 ms with pthread_create,
// 138–155 ms with Thread.Start; all of them ran after 85–87 ms against 139–157 ms.
//
// Such a thread is a managed thread like any other once it runs managed code (a background one: the runtime does
// not wait for threads it did not create), so diagnostics, stack dumps and GC suspension see it as usual. Its
// unhandled exceptions end the process as a Thread's would (the carrier loop lets none escape but internal errors).
// Elsewhere (another OS or architecture) carriers are Threads.

using System.Runtime.InteropServices;

namespace GreenRuntime.Scheduling;

internal static unsafe class NativeThread
{
    /// <summary>Whether carriers start through pthread_create here.</summary>
    public static readonly bool IsAvailable = OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    private const int PthreadCreateDetached = 1;

    /// <summary>Starts a detached thread with <paramref name="stackSize"/> bytes of stack that runs <paramref name="body"/>.</summary>
    /// <exception cref="OutOfMemoryException">The kernel refused the thread (as <see cref="Thread.Start()"/> reports it).</exception>
    public static void Start(Action body, int stackSize)
    {
        var attr = stackalloc byte[128]; // pthread_attr_t: 56 bytes on x64, 64 on arm64 (glibc), less on musl
        Check(PthreadAttrInit(attr), "pthread_attr_init");
        try
        {
            Check(PthreadAttrSetStackSize(attr, stackSize), "pthread_attr_setstacksize");
            Check(PthreadAttrSetDetachState(attr, PthreadCreateDetached), "pthread_attr_setdetachstate");
            var handle = GCHandle.Alloc(body);
            ulong id;
            int error = PthreadCreate(&id, attr, &Entry, GCHandle.ToIntPtr(handle));
            if (error != 0)
            {
                handle.Free();
                Check(error, "pthread_create");
            }
        }
        finally
        {
            PthreadAttrDestroy(attr);
        }
    }

    /// <summary>
    /// The stack a thread of this process gets when nobody asks for a size: pthread's default, which glibc takes from the
    /// stack limit (<c>ulimit -s</c>; 8 MiB on most Linux systems, 32 MiB when unlimited). .NET starts its threads (the
    /// thread pool's, <c>new Thread()</c>) with it too. Null where pthread is not used or does not say.
    /// </summary>
    public static long? DefaultStackSize()
    {
        if (!IsAvailable) return null;
        var attr = stackalloc byte[128];
        if (PthreadAttrInit(attr) != 0) return null;
        try
        {
            nint size;
            return PthreadAttrGetStackSize(attr, &size) == 0 && size > 0 ? size : null;
        }
        finally
        {
            PthreadAttrDestroy(attr);
        }
    }

    private static void Check(int error, string call)
    {
        if (error != 0)
            throw new OutOfMemoryException($"The kernel refused a new carrier thread: {call} failed with error {error} ({Marshal.GetPInvokeErrorMessage(error)}).");
    }

    [UnmanagedCallersOnly]
    private static nint Entry(nint state)
    {
        var handle = GCHandle.FromIntPtr(state);
        var body = (Action)handle.Target!;
        handle.Free();
        body();
        return 0;
    }

    [DllImport("libc", EntryPoint = "pthread_attr_init")]
    private static extern int PthreadAttrInit(byte* attr);

    [DllImport("libc", EntryPoint = "pthread_attr_destroy")]
    private static extern int PthreadAttrDestroy(byte* attr);

    [DllImport("libc", EntryPoint = "pthread_attr_getstacksize")]
    private static extern int PthreadAttrGetStackSize(byte* attr, nint* size);

    [DllImport("libc", EntryPoint = "pthread_attr_setstacksize")]
    private static extern int PthreadAttrSetStackSize(byte* attr, nint size);

    [DllImport("libc", EntryPoint = "pthread_attr_setdetachstate")]
    private static extern int PthreadAttrSetDetachState(byte* attr, int state);

    [DllImport("libc", EntryPoint = "pthread_create")]
    private static extern int PthreadCreate(ulong* thread, byte* attr, delegate* unmanaged<nint, nint> start, nint arg);
}
