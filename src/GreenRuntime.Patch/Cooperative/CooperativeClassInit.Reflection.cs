using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

// Reflection that initialises a class inside the runtime, where no managed entry point is passed: reading or writing
// a static field (FieldInfo.GetValue/SetValue and their TypedReference forms), ConstructorInfo.Invoke (and so
// Activator.CreateInstance with arguments), a ConstructorInvoker's first calls, RuntimeHelpers.GetUninitializedObject.
// A greenlet reaching a class that another greenlet is initialising (parked inside its static constructor) would wait
// for the runtime's class-init lock holding the baton: the hub deadlocks. Measured on .NET 10.0.12 with ten greenlets
// touching a class whose constructor sleeps: each of these paths deadlocked; Activator.CreateInstance without
// arguments or of T, a static method's or property's Invoke and compiled code did not (they pass through
// InitClassSlow or RunClassConstructor).
//
// The replacements initialise the class through the cooperative RunClassConstructor first, then call the original,
// which then finds the class initialised. That changes nothing the caller can see: the class is initialised at the
// same call, exactly once; a constructor that throws is swallowed here and the original reports it in its own way
// (TypeInitializationException, wrapped or not, as before); and for a type marked beforefieldinit running the
// constructor earlier than the runtime would is what that flag allows. Only greenlets pay for the check, and once a
// class is known to be initialised it costs a lookup (`quick-patch`: a static field's GetValue 9 ns unpatched, 14 ns
// on a greenlet, 9 ns off any hub).
internal static unsafe partial class CooperativeClassInit
{
    internal static readonly OriginalSlot<Func<FieldInfo, object?, object?>> FieldGetValueSlot = new(static (f, o) => f.GetValue(o));

    internal static readonly OriginalSlot<Action<FieldInfo, object?, object?, BindingFlags, Binder?, CultureInfo?>> FieldSetValueSlot =
        new(static (f, o, v, flags, binder, culture) => f.SetValue(o, v, flags, binder, culture));

    internal static readonly OriginalSlot<Func<ConstructorInfo, BindingFlags, Binder?, object?[]?, CultureInfo?, object>> ConstructorInvokeSlot =
        new(static (c, flags, binder, args, culture) => c.Invoke(flags, binder, args, culture));

    internal static readonly OriginalSlot<Func<Type, object>> GetUninitializedObjectSlot = new(static t => RuntimeHelpers.GetUninitializedObject(t));

    internal delegate object? GetValueDirectFn(FieldInfo field, TypedReference obj);

    internal delegate void SetValueDirectFn(FieldInfo field, TypedReference obj, object value);

    internal static readonly OriginalSlot<GetValueDirectFn> FieldGetValueDirectSlot = new(static (f, r) => f.GetValueDirect(r));

    internal static readonly OriginalSlot<SetValueDirectFn> FieldSetValueDirectSlot = new(static (f, r, v) => f.SetValueDirect(r, v));

    internal delegate object? InterpretedInvokeFn(ConstructorInvoker invoker, object? obj, IntPtr* args);

    /// <summary><c>ConstructorInvoker.InterpretedInvoke(object, IntPtr*)</c>: the first calls of a
    /// <see cref="ConstructorInvoker"/>, before it emits IL of its own, allocate inside the runtime.</summary>
    internal static readonly MethodInfo? InterpretedInvokeMethod = typeof(ConstructorInvoker).GetMethod("InterpretedInvoke", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(object), typeof(IntPtr*)]);

    private static readonly FieldInfo? s_invokerConstructor = typeof(ConstructorInvoker).GetField("_method", BindingFlags.NonPublic | BindingFlags.Instance);

    internal static readonly OriginalSlot<InterpretedInvokeFn> InterpretedInvokeSlot = new(CallInterpretedInvokeDirect);

    private static object? CallInterpretedInvokeDirect(ConstructorInvoker invoker, object? obj, IntPtr* args)
    {
        var entry = InterpretedInvokeMethod?.MethodHandle.GetFunctionPointer()
            ?? throw new MissingMethodException(nameof(ConstructorInvoker), "InterpretedInvoke");
        return ((delegate* managed<ConstructorInvoker, object?, IntPtr*, object?>)entry)(invoker, obj, args);
    }

    /// <summary>The reflection targets: <c>RtFieldInfo</c> and <c>RuntimeConstructorInfo</c> are the runtime's sealed
    /// implementations that every <see cref="FieldInfo"/> and <see cref="ConstructorInfo"/> of a loaded type is.</summary>
    internal static readonly Type? RtFieldInfo = typeof(object).Assembly.GetType("System.Reflection.RtFieldInfo");

    internal static readonly Type? RuntimeConstructorInfo = typeof(object).Assembly.GetType("System.Reflection.RuntimeConstructorInfo");

    /// <summary>Classes found initialised (type handles): their reflection calls skip the check.</summary>
    private static readonly ConcurrentDictionary<nint, bool> s_initialised = new();

    /// <summary>The class this thread last found initialised: a loop over one type's fields skips even the lookup.</summary>
    [ThreadStatic] private static Type? t_lastInitialised;

    /// <summary>Replaces <c>RtFieldInfo.GetValue(object)</c>.</summary>
    public static object? FieldGetValue(FieldInfo field, object? obj)
    {
        if (field.IsStatic) InitialiseBeforeReflection(field.DeclaringType, forInstance: false);
        // A hot call in serialisers: a direct calli to the original when bound (see OriginalSlot.Entry).
        nint entry = FieldGetValueSlot.Entry;
        return entry != 0 ? ((delegate* managed<FieldInfo, object?, object?>)entry)(field, obj) : FieldGetValueSlot.Call(field, obj);
    }

    /// <summary>Replaces <c>RtFieldInfo.SetValue(object, object, BindingFlags, Binder, CultureInfo)</c>.</summary>
    public static void FieldSetValue(FieldInfo field, object? obj, object? value, BindingFlags invokeAttr, Binder? binder, CultureInfo? culture)
    {
        if (field.IsStatic) InitialiseBeforeReflection(field.DeclaringType, forInstance: false);
        FieldSetValueSlot.Call(field, obj, value, invokeAttr, binder, culture);
    }

    /// <summary>Replaces <c>RtFieldInfo.GetValueDirect(TypedReference)</c>.</summary>
    public static object? FieldGetValueDirect(FieldInfo field, TypedReference obj)
    {
        if (field.IsStatic) InitialiseBeforeReflection(field.DeclaringType, forInstance: false);
        return FieldGetValueDirectSlot.Call(field, obj);
    }

    /// <summary>Replaces <c>RtFieldInfo.SetValueDirect(TypedReference, object)</c>.</summary>
    public static void FieldSetValueDirect(FieldInfo field, TypedReference obj, object value)
    {
        if (field.IsStatic) InitialiseBeforeReflection(field.DeclaringType, forInstance: false);
        FieldSetValueDirectSlot.Call(field, obj, value);
    }

    /// <summary>Replaces <c>RuntimeConstructorInfo.Invoke(BindingFlags, Binder, object[], CultureInfo)</c>, the
    /// constructor call that allocates (what <see cref="ConstructorInfo.Invoke(object[])"/> and
    /// <c>Activator.CreateInstance</c> with arguments reach).</summary>
    public static object ConstructorInvoke(ConstructorInfo constructor, BindingFlags invokeAttr, Binder? binder, object?[]? parameters, CultureInfo? culture)
    {
        if (!constructor.IsStatic) InitialiseBeforeReflection(constructor.DeclaringType, forInstance: true);
        nint entry = ConstructorInvokeSlot.Entry;
        return entry != 0
            ? ((delegate* managed<ConstructorInfo, BindingFlags, Binder?, object?[]?, CultureInfo?, object>)entry)(constructor, invokeAttr, binder, parameters, culture)
            : ConstructorInvokeSlot.Call(constructor, invokeAttr, binder, parameters, culture);
    }

    /// <summary>Replaces <c>ConstructorInvoker.InterpretedInvoke(object, IntPtr*)</c>; a null <paramref name="obj"/>
    /// allocates.</summary>
    public static object? ConstructorInvokerInvoke(ConstructorInvoker invoker, object? obj, IntPtr* args)
    {
        if (obj is null && OnGreenlet && s_invokerConstructor?.GetValue(invoker) is ConstructorInfo constructor)
            InitialiseBeforeReflection(constructor.DeclaringType, forInstance: true);
        return InterpretedInvokeSlot.Call(invoker, obj, args);
    }

    /// <summary>Replaces <c>RuntimeHelpers.GetUninitializedObject(Type)</c>.</summary>
    public static object GetUninitializedObject(Type type)
    {
        InitialiseBeforeReflection(type, forInstance: true);
        return GetUninitializedObjectSlot.Call(type);
    }

    /// <summary>Only greenlets pay for the check: elsewhere the runtime's own wait for a class being initialised is right.</summary>
    private static bool OnGreenlet => Cooperative.ParkingHubSilent() is not null;

    /// <summary>On a greenlet, initialises <paramref name="type"/> through the cooperative <see cref="RunClassConstructor"/>
    /// unless it is known to be initialised, or is not a class the runtime would initialise for this call: then the
    /// original throws its own exception, as it would have (an instance of an abstract or byref-like type).</summary>
    /// <param name="type">The class whose static field is used, or whose instance is created.</param>
    /// <param name="forInstance">An instance is created (not a static field used).</param>
    private static void InitialiseBeforeReflection(Type? type, bool forInstance)
    {
        if (type is null || ReferenceEquals(type, t_lastInitialised) || !OnGreenlet) return;
        if (type.GetType() != typeof(object).GetType()) return; // not a RuntimeType: a TypeBuilder or a custom Type
        nint handle = type.TypeHandle.Value;
        if (s_initialised.ContainsKey(handle))
        {
            t_lastInitialised = type;
            return;
        }
        if (type.ContainsGenericParameters) return;
        if (forInstance && (type.IsAbstract || type.IsByRefLike)) return;
        try
        {
            RunClassConstructor(type.TypeHandle);
        }
        catch (TypeInitializationException)
        {
            return; // the original throws it again, in its own way
        }
        s_initialised.TryAdd(handle, true);
        t_lastInitialised = type;
    }

    /// <summary>Runs the reflection replacements' own code once before they go live (see <see cref="WarmUp"/>).</summary>
    internal static void WarmUpReflection()
    {
        WarmUp();
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(InitialiseBeforeReflection), BindingFlags.NonPublic | BindingFlags.Static)!.MethodHandle);
        s_initialised.TryAdd(typeof(CooperativeClassInit).TypeHandle.Value, true);
        _ = s_initialised.ContainsKey(0);
        _ = typeof(WarmUpProbe).GetField(nameof(WarmUpProbe.Value))!.GetValue(null);
        typeof(WarmUpProbe).GetField(nameof(WarmUpProbe.Value))!.SetValue(null, 1);
        _ = typeof(WarmUpProbe).GetConstructor(Type.EmptyTypes)!.Invoke(null);
        _ = RuntimeHelpers.GetUninitializedObject(typeof(WarmUpProbe));
        _ = ConstructorInvoker.Create(typeof(WarmUpProbe).GetConstructor(Type.EmptyTypes)!).Invoke();
    }

    private sealed class WarmUpProbe
    {
        public static int Value = 1;
    }
}
