using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Locks owned by an OS thread — <see cref="Monitor"/> (the C# <c>lock</c> statement), <see cref="Lock"/> and the
/// runtime's class-initialisation lock: a greenlet that would wait for one releases the hub's baton around the
/// runtime's wait (see <see cref="CooperativeMonitor"/>, <see cref="CooperativeLock"/>, <see cref="CooperativeClassInit"/>);
/// and the lazy initialisation they guard runs shielded (static constructors, <see cref="Lazy{T}"/> factories:
/// <see cref="CooperativeLazy"/>).
/// </summary>
internal sealed class LocksPatchSet : PatchSet
{
    private static readonly Type M = typeof(CooperativeMonitor);
    private static readonly Type C = typeof(CooperativeClassInit);

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
        // Reflection that initialises a class inside the runtime (CooperativeClassInit.Reflection.cs).
        new("System.Reflection.RtFieldInfo.GetValue(Object) (a static field's FieldInfo.GetValue)", CooperativeClassInit.RtFieldInfo?.GetMethod("GetValue", [typeof(object)]), C.GetMethod(nameof(CooperativeClassInit.FieldGetValue))!, CooperativeClassInit.FieldGetValueSlot, CooperativeClassInit.WarmUpReflection),
        new("System.Reflection.RtFieldInfo.SetValue(Object, Object, BindingFlags, Binder, CultureInfo) (a static field's FieldInfo.SetValue)", CooperativeClassInit.RtFieldInfo?.GetMethod("SetValue", [typeof(object), typeof(object), typeof(BindingFlags), typeof(Binder), typeof(CultureInfo)]), C.GetMethod(nameof(CooperativeClassInit.FieldSetValue))!, CooperativeClassInit.FieldSetValueSlot, CooperativeClassInit.WarmUpReflection),
        new("System.Reflection.RtFieldInfo.GetValueDirect(TypedReference) (a static field's FieldInfo.GetValueDirect)", CooperativeClassInit.RtFieldInfo?.GetMethod("GetValueDirect", [typeof(TypedReference)]), C.GetMethod(nameof(CooperativeClassInit.FieldGetValueDirect))!, CooperativeClassInit.FieldGetValueDirectSlot, CooperativeClassInit.WarmUpReflection),
        new("System.Reflection.RtFieldInfo.SetValueDirect(TypedReference, Object) (a static field's FieldInfo.SetValueDirect)", CooperativeClassInit.RtFieldInfo?.GetMethod("SetValueDirect", [typeof(TypedReference), typeof(object)]), C.GetMethod(nameof(CooperativeClassInit.FieldSetValueDirect))!, CooperativeClassInit.FieldSetValueDirectSlot, CooperativeClassInit.WarmUpReflection),
        new("System.Reflection.RuntimeConstructorInfo.Invoke(BindingFlags, Binder, Object[], CultureInfo) (ConstructorInfo.Invoke)", CooperativeClassInit.RuntimeConstructorInfo?.GetMethod("Invoke", [typeof(BindingFlags), typeof(Binder), typeof(object[]), typeof(CultureInfo)]), C.GetMethod(nameof(CooperativeClassInit.ConstructorInvoke))!, CooperativeClassInit.ConstructorInvokeSlot, CooperativeClassInit.WarmUpReflection),
        new("System.Reflection.ConstructorInvoker.InterpretedInvoke(Object, IntPtr*) (a ConstructorInvoker's first calls)", CooperativeClassInit.InterpretedInvokeMethod, C.GetMethod(nameof(CooperativeClassInit.ConstructorInvokerInvoke))!, CooperativeClassInit.InterpretedInvokeSlot, CooperativeClassInit.WarmUpReflection),
        Point(typeof(RuntimeHelpers), "GetUninitializedObject", [typeof(Type)], C, nameof(CooperativeClassInit.GetUninitializedObject), CooperativeClassInit.GetUninitializedObjectSlot) with { WarmUp = CooperativeClassInit.WarmUpReflection },
        // Lazy<T> factories run shielded, as static constructors do: a kill raised inside one would be cached as its value.
        new("System.Lazy`1.ViaFactory(LazyThreadSafetyMode) (Lazy<T> factories, T a reference type)", CooperativeLazy.ViaFactoryMethod, typeof(CooperativeLazy).GetMethod(nameof(CooperativeLazy.ViaFactory))!, CooperativeLazy.ViaFactorySlot, CooperativeLazy.WarmUp),
    ];
}
