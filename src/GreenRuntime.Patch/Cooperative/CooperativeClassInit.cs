using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Class initialisation (static constructors, static field initialisers) on greenlets: a greenlet may park
/// inside a static constructor, and a greenlet that reaches a class another thread is still initialising waits
/// for it with the hub's baton released, instead of blocking the hub on the runtime's class-init lock.
/// </summary>
/// <remarks>
/// <para>The deadlock this prevents: greenlet A runs a static constructor that does patched I/O and parks,
/// while its carrier holds the runtime's initialisation lock of that class. Greenlet B, given the baton, touches
/// the class and blocks in the runtime waiting for that lock, holding the baton; A can never be resumed.</para>
/// <para>Why not keep A from parking instead (run its blocking calls for real while it is inside a static
/// constructor): that stalls every greenlet of the hub for the whole first use (a connection opened in a
/// static field initialiser takes the hub down for seconds), and it still deadlocks when the constructor waits
/// for something only another greenlet can provide (a lock that greenlet holds across a park). Releasing the
/// baton only in the greenlet that actually meets an initialisation in progress keeps the hub running and costs
/// nothing to the greenlet that runs the constructor.</para>
/// <para>How a greenlet knows it would wait: every entry of jitted code into class initialisation goes
/// through <c>InitHelpers.InitClassSlow(MethodTable*)</c> on .NET 10 (static method calls, static field
/// access, <c>new</c>, generic statics; <c>RuntimeHelpers.RunClassConstructor</c> is patched too). ReadyToRun code
/// initialises classes natively, past both; a greenlet inside such a constructor does not park at all
/// (<see cref="NativeClassInit"/>). Both
/// replacements record which thread is initialising which class while a greenlet runs the original; a
/// greenlet that finds another thread recorded for the class waits with the baton released. The record is
/// made only for greenlets, so an initialisation running on a plain thread is waited for holding the baton
/// (a stall of the hub, reported by the blocking monitor, not a deadlock: a plain thread does not need the
/// baton to finish). When no carrier is left to take over the hub, such a greenlet polls for the record to go instead
/// (1–20 ms pauses), then lets the runtime finish the job. Reflection that initialises a class natively (a static field's <c>FieldInfo.GetValue</c>,
/// <c>ConstructorInfo.Invoke</c>, <c>RuntimeHelpers.GetUninitializedObject</c>) is made to pass through
/// <see cref="RunClassConstructor"/> first (CooperativeClassInit.Reflection.cs).</para>
/// <para>A greenlet runs a static constructor under a <see cref="CancellationShield"/>: a kill or timeout that comes
/// meanwhile is raised at its first blocking point after the constructor. Raised inside it, it would fail the
/// constructor, which the runtime remembers for the life of the process (every later use of the class throws
/// <see cref="TypeInitializationException"/>); an ASP.NET Core request whose client went away during the first use of
/// a service broke that service so. A thread is never stopped inside a static constructor either (.NET Framework
/// deferred Thread.Abort there for the same reason).</para>
/// </remarks>
internal static unsafe partial class CooperativeClassInit
{
    internal delegate void InitClassFn(void* methodTable);

    internal static readonly MethodInfo? InitClassSlowMethod =
        typeof(object).Assembly.GetType("System.Runtime.CompilerServices.InitHelpers")?.GetMethod("InitClassSlow", BindingFlags.NonPublic | BindingFlags.Static);

    // Re-entrant fallback: the patching thread itself may need a class initialised between the jump being written
    // and the original being bound; the runtime's own entry for reflection does the same work.
    internal static readonly OriginalSlot<InitClassFn> InitClassSlow =
        new(CallDirect, static mt => RuntimeHelpers.RunClassConstructor(RuntimeTypeHandle.FromIntPtr((nint)mt)));

    internal static readonly OriginalSlot<Action<RuntimeTypeHandle>> RunClassConstructorSlot = new(static h => RuntimeHelpers.RunClassConstructor(h));

    /// <summary>Class (MethodTable address) -> managed id of the greenlet carrier initialising it, and its hub.</summary>
    private static readonly Dictionary<nint, (int Thread, Hub? Hub)> s_initialising = new();

    // The originals, by class (MethodTable address): what a greenlet runs itself, or with the baton released.
    private static readonly Func<nint, bool> s_initClass = static mt =>
    {
        InitClassSlow.Call((void*)mt);
        return true;
    };

    private static readonly Func<nint, bool> s_runClassConstructor = static mt =>
    {
        RunClassConstructorSlot.Call(RuntimeTypeHandle.FromIntPtr(mt));
        return true;
    };

    private static void CallDirect(void* methodTable)
    {
        var entry = InitClassSlowMethod?.MethodHandle.GetFunctionPointer()
            ?? throw new MissingMethodException("InitHelpers", "InitClassSlow");
        ((delegate* managed<void*, void>)entry)(methodTable);
    }

    /// <summary>Replaces <c>InitHelpers.InitClassSlow(MethodTable*)</c>.</summary>
    public static void InitClass(void* methodTable)
    {
        if (Cooperative.ParkingHubSilent() is not { } hub)
        {
            ThrowIfItWouldWaitForItsOwnHub((nint)methodTable);
            InitClassSlow.Call(methodTable);
        }
        else
        {
            InitialiseOnGreenlet(hub, (nint)methodTable, s_initClass);
        }
    }

    /// <summary>Replaces <c>RuntimeHelpers.RunClassConstructor(RuntimeTypeHandle)</c>.</summary>
    public static void RunClassConstructor(RuntimeTypeHandle type)
    {
        if (type.Value == 0 || Cooperative.ParkingHubSilent() is not { } hub)
        {
            if (type.Value != 0) ThrowIfItWouldWaitForItsOwnHub(type.Value);
            RunClassConstructorSlot.Call(type);
        }
        else
        {
            InitialiseOnGreenlet(hub, type.Value, s_runClassConstructor);
        }
    }

    /// <summary>
    /// Code of a hub that cannot park (a link or timer callback, <c>Hub.Post</c>, code inside SuppressCooperation) and
    /// reaches a class whose constructor a greenlet of the same hub is running: that greenlet is parked inside the
    /// constructor and needs the baton this code holds, so the runtime's wait for the class would never end. Throws
    /// instead (the callback's failure is logged), where the hub used to hang for good.
    /// </summary>
    private static void ThrowIfItWouldWaitForItsOwnHub(nint methodTable)
    {
        if (Parking.CurrentHub is not { } hub) return; // no hub here, or released: the wait holds nothing up
        (int Thread, Hub? Hub) owner;
        EnterGate();
        try
        {
            if (!s_initialising.TryGetValue(methodTable, out owner)) return;
        }
        finally
        {
            ExitGate();
        }
        if (owner.Hub != hub || owner.Thread == Environment.CurrentManagedThreadId) return;
        var type = Type.GetTypeFromHandle(RuntimeTypeHandle.FromIntPtr(methodTable));
        throw new InvalidOperationException(
            $"{type} is being initialised by a greenlet of {hub} that is parked inside its static constructor, and this code " +
            "cannot park (a hub callback: a link, a timer, Hub.Post; or code inside Parking.SuppressCooperation): waiting for the " +
            "class here would hold the hub for ever. Use the class from a greenlet, or make sure it is initialised first.");
    }

    /// <summary>Both entry points on a greenlet: run <paramref name="original"/> as the class's initialiser (shielded, see
    /// the remarks), or wait for another thread's initialisation with the baton released.</summary>
    private static void InitialiseOnGreenlet(Hub hub, nint methodTable, Func<nint, bool> original)
    {
        switch (Enter(methodTable, hub))
        {
            case Role.Initialiser:
                try
                {
                    using (Green.Shield()) // a kill must not fail the constructor
                        original(methodTable);
                }
                finally
                {
                    Leave(methodTable);
                }
                return;
            case Role.Waiter when Parking.CanReleaseBaton:
                Parking.RunReleased(original, methodTable, WaitReason.Blocking, cancellationPoint: false);
                return;
            case Role.Waiter:
                // No carrier left to take over the hub: the runtime's wait would hold the baton, which the initialiser
                // needs if it is a greenlet of this hub parked inside the constructor (the hub stopped for good). Its
                // record goes once the constructor has run; shielded, as the released wait is no cancellation point.
                using (Green.Shield())
                    Parking.PollUntil(() => !IsInitialising(methodTable), timeout: null);
                original(methodTable);
                return;
            default:
                original(methodTable);
                return;
        }
    }

    private enum Role
    {
        /// <summary>No other greenlet is initialising the class: this one runs the original and may become the initialiser.</summary>
        Initialiser,
        /// <summary>Another thread is initialising it: the runtime will make this one wait.</summary>
        Waiter,
        /// <summary>This thread is already initialising it (a constructor touching its own class): the runtime returns at once.</summary>
        Recursive,
    }

    // A spin lock, not a monitor: a contended `lock` on a greenlet would go through the Locks set's own Monitor
    // replacement from inside this one. The critical sections are a dictionary lookup.
    private static int s_gate;

    private static void EnterGate()
    {
        while (Interlocked.CompareExchange(ref s_gate, 1, 0) != 0) Thread.SpinWait(16);
    }

    private static void ExitGate() => Volatile.Write(ref s_gate, 0);

    private static Role Enter(nint type, Hub? hub)
    {
        int me = Environment.CurrentManagedThreadId;
        EnterGate();
        try
        {
            if (s_initialising.TryGetValue(type, out var owner))
                return owner.Thread == me ? Role.Recursive : Role.Waiter;
            s_initialising.Add(type, (me, hub));
            return Role.Initialiser;
        }
        finally
        {
            ExitGate();
        }
    }

    private static bool IsInitialising(nint type)
    {
        EnterGate();
        try
        {
            return s_initialising.ContainsKey(type);
        }
        finally
        {
            ExitGate();
        }
    }

    /// <summary>Whether this thread runs <paramref name="type"/>'s static constructor through one of the two entry points
    /// (for <see cref="NativeClassInit"/>, which finds the constructor on the stack). A stack frame names a shared generic
    /// class by its definition, so a recorded instantiation of that definition counts.</summary>
    internal static bool IsRunByThisThread(Type type)
    {
        int me = Environment.CurrentManagedThreadId;
        var mine = new List<nint>();
        EnterGate();
        try
        {
            foreach (var (mt, owner) in s_initialising)
                if (owner.Thread == me) mine.Add(mt);
        }
        finally
        {
            ExitGate();
        }
        foreach (var mt in mine)
        {
            var recorded = Type.GetTypeFromHandle(RuntimeTypeHandle.FromIntPtr(mt));
            if (recorded == type || (type.IsGenericTypeDefinition && recorded is { IsGenericType: true } && recorded.GetGenericTypeDefinition() == type))
                return true;
        }
        return false;
    }

    private static void Leave(nint type)
    {
        EnterGate();
        try
        {
            s_initialising.Remove(type);
        }
        finally
        {
            ExitGate();
        }
    }

    /// <summary>
    /// Runs every path of the replacements once before they go live, so that their first real call needs no
    /// class initialisation or compilation of their own (it would come straight back here).
    /// </summary>
    internal static void WarmUp()
    {
        var probe = (nint)1;
        _ = Enter(probe, null);
        _ = Enter(probe, null);
        ThrowIfItWouldWaitForItsOwnHub(probe);
        _ = IsInitialising(probe);
        Leave(probe);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(InitClass))!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(RunClassConstructor))!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(InitialiseOnGreenlet), BindingFlags.NonPublic | BindingFlags.Static)!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(Enter), BindingFlags.NonPublic | BindingFlags.Static)!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(Leave), BindingFlags.NonPublic | BindingFlags.Static)!.MethodHandle);
        RuntimeHelpers.PrepareMethod(typeof(CooperativeClassInit).GetMethod(nameof(ThrowIfItWouldWaitForItsOwnHub), BindingFlags.NonPublic | BindingFlags.Static)!.MethodHandle);
        _ = Cooperative.ParkingHubSilent();
        GC.KeepAlive(s_initClass);
        GC.KeepAlive(s_runClassConstructor);
    }
}
