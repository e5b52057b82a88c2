using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="Lazy{T}"/> factories on greenlets run shielded: a kill or timeout that comes while a factory parks is raised
/// at the greenlet's first blocking point after it, as for a static constructor.
/// </summary>
/// <remarks>
/// <para>Why: a <see cref="Lazy{T}"/> in <see cref="LazyThreadSafetyMode.ExecutionAndPublication"/> or
/// <see cref="LazyThreadSafetyMode.None"/> mode (what <c>new Lazy&lt;T&gt;(factory)</c> gives) remembers the exception
/// its factory threw as its outcome for good, and drops the factory. A kill raised inside the factory made every later
/// <c>Value</c>, in every greenlet and thread, throw that <see cref="GreenletExit"/>: under <c>UseGreenlets()</c> a client
/// that went away during the first request to use a lazily created service broke that service for the life of the
/// process. A thread is never stopped inside a factory (nothing interrupts it there), so the greenlet is not either.</para>
/// <para>Where: <c>Lazy&lt;T&gt;.ViaFactory(LazyThreadSafetyMode)</c>, the one private method that runs a factory and
/// caches its exception, in every mode that caches. Patched as the shared code of <c>Lazy&lt;T&gt;</c> over reference
/// types (one body serves <c>Lazy&lt;string&gt;</c>, <c>Lazy&lt;MyService&gt;</c>, ...); a <c>Lazy&lt;T&gt;</c> of a value
/// type has code of its own per type and is not covered (docs/patching.md). The parameterless-constructor form and
/// <see cref="LazyThreadSafetyMode.PublicationOnly"/> cache no exception and need nothing.</para>
/// </remarks>
internal static unsafe class CooperativeLazy
{
    /// <summary><c>Lazy&lt;__Canon&gt;.ViaFactory</c>, reached through an instantiation over a reference type.</summary>
    internal static readonly MethodInfo? ViaFactoryMethod =
        typeof(Lazy<object>).GetMethod("ViaFactory", BindingFlags.NonPublic | BindingFlags.Instance, [typeof(LazyThreadSafetyMode)]);

    internal static readonly OriginalSlot<Action<object, LazyThreadSafetyMode>> ViaFactorySlot = new(CallDirect);

    private static void CallDirect(object lazy, LazyThreadSafetyMode mode)
    {
        var entry = ViaFactoryMethod?.MethodHandle.GetFunctionPointer()
            ?? throw new MissingMethodException("Lazy`1", "ViaFactory");
        ((delegate* managed<object, LazyThreadSafetyMode, void>)entry)(lazy, mode); // shared code: `this` names the T
    }

    /// <summary>Replaces <c>Lazy&lt;T&gt;.ViaFactory(LazyThreadSafetyMode)</c> for every reference type T.</summary>
    public static void ViaFactory(object lazy, LazyThreadSafetyMode mode)
    {
        if (Cooperative.ParkingHubSilent() is null)
        {
            ViaFactorySlot.Call(lazy, mode);
            return;
        }
        using (Green.Shield()) // a kill must not become the Lazy's value
            ViaFactorySlot.Call(lazy, mode);
    }

    /// <summary>Runs a factory once, so that the shared code has a body before the detour looks for it.</summary>
    internal static void WarmUp() => _ = new Lazy<object>(static () => new object()).Value;
}
