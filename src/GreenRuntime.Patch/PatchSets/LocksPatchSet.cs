using System.Runtime.CompilerServices;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Locks owned by an OS thread — <see cref="Monitor"/> (the C# <c>lock</c> statement), <see cref="Lock"/> and the
/// runtime's class-initialisation lock: a greenlet that would wait for one releases the hub's baton around the
/// runtime's wait (see <see cref="CooperativeMonitor"/>, <see cref="CooperativeLock"/>, <see cref="CooperativeClassInit"/>).
/// </summary>
internal sealed class LocksPatchSet : PatchSet
{
    private static readonly Type M = typeof(CooperativeMonitor);

    public static readonly LocksPatchSet Instance = new(); // after the fields its constructor uses

    public override string Name => "Locks";

    private static void WarmUpMonitor()
    {
        var probe = new object();
        lock (probe) Monitor.Wait(probe, 0);
        Monitor.TryEnter(probe, 1);
        Monitor.Exit(probe);
    }

    private static void WarmUpLock()
    {
        var probe = new Lock();
        if (probe.TryEnter(1)) probe.Exit();
    }

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        new("System.Threading.Monitor.Enter_Slowpath(Object) (contended lock / Monitor.Enter)", CooperativeMonitor.EnterSlowpathMethod, M.GetMethod(nameof(CooperativeMonitor.Enter))!, CooperativeMonitor.EnterSlowpath, WarmUpMonitor),
        new("System.Threading.Monitor.TryEnter_Slowpath(Object, Int32) (contended TryEnter with a timeout)", CooperativeMonitor.TryEnterSlowpathMethod, M.GetMethod(nameof(CooperativeMonitor.TryEnter))!, CooperativeMonitor.TryEnterSlowpath, WarmUpMonitor),
        Point(typeof(Monitor), "Wait", [typeof(object), typeof(int)], M, nameof(CooperativeMonitor.Wait), CooperativeMonitor.WaitInt) with { WarmUp = WarmUpMonitor },
        new("System.Threading.Lock.TryEnterSlow(Int32, ThreadId) (contended Lock.Enter / TryEnter)", CooperativeLock.TryEnterSlowMethod, typeof(CooperativeLock).GetMethod(nameof(CooperativeLock.TryEnter))!, CooperativeLock.TryEnterSlow, WarmUpLock),
        new("System.Runtime.CompilerServices.InitHelpers.InitClassSlow(MethodTable*) (static constructors)", CooperativeClassInit.InitClassSlowMethod, typeof(CooperativeClassInit).GetMethod(nameof(CooperativeClassInit.InitClass))!, CooperativeClassInit.InitClassSlow, CooperativeClassInit.WarmUp),
        Point(typeof(RuntimeHelpers), "RunClassConstructor", [typeof(RuntimeTypeHandle)], typeof(CooperativeClassInit), nameof(CooperativeClassInit.RunClassConstructor), CooperativeClassInit.RunClassConstructorSlot) with { WarmUp = CooperativeClassInit.WarmUp },
    ];
}
