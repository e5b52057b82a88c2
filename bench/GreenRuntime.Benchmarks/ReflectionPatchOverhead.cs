using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What the Locks set's reflection patches cost (they initialise a class cooperatively before the runtime would, see
/// docs/patching.md): <c>FieldInfo.GetValue</c> of a static and of an instance field and <c>ConstructorInfo.Invoke</c>,
/// best of 9, unpatched, then after <c>Patch.Locks()</c> on a thread without a hub and on a greenlet.
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-patch [calls]   (after the rows of PatchOverhead)
/// </remarks>
internal static class ReflectionPatchOverhead
{
    public static int StaticField = 1;

    public static void Run(int calls)
    {
        var staticField = typeof(ReflectionPatchOverhead).GetField(nameof(StaticField))!;
        var instanceField = typeof(Probe).GetField(nameof(Probe.Field))!;
        var constructor = typeof(Probe).GetConstructor(Type.EmptyTypes)!;
        var probe = new Probe();
        var loops = new (string Name, Action<int> Loop)[]
        {
            ("FieldInfo.GetValue(static)", n => GetLoop(staticField, null, n)),
            ("FieldInfo.GetValue(instance)", n => GetLoop(instanceField, probe, n)),
            ("ConstructorInfo.Invoke", n => InvokeLoop(constructor, n)),
        };
        var original = loops.ToDictionary(l => l.Name, l => Best(calls, l.Loop));
        var report = Patch.Locks();
        if (report.Patched.Count == 0) Console.WriteLine("warning: nothing was patched: " + string.Join("; ", report.Refused));
        var offHub = loops.ToDictionary(l => l.Name, l => Best(calls, l.Loop));
        var onGreenlet = new Dictionary<string, double>();
        using (new Hub())
            Green.Spawn(() => { foreach (var (name, loop) in loops) onGreenlet[name] = Best(calls, loop); }).Join();
        Patch.UndoAll();
        foreach (var (name, _) in loops)
        {
            Console.WriteLine($"{{\"bench\": \"reflection_{name}\", \"N\": {calls}, \"original_ns\": {original[name]:F1}, " +
                $"\"patched_offhub_ns\": {offHub[name]:F1}, \"patched_on_greenlet_ns\": {onGreenlet[name]:F1}}}");
        }
    }

    private static double Best(int calls, Action<int> loop) => BestOf.NsPerCall(calls, () => loop(calls), rounds: 9, settle: true);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void GetLoop(FieldInfo field, object? target, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (field.GetValue(target) is null) throw new InvalidOperationException("the field has a value");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void InvokeLoop(ConstructorInfo constructor, int calls)
    {
        for (int i = 0; i < calls; i++)
        {
            if (constructor.Invoke(null) is null) throw new InvalidOperationException("an instance was made");
        }
    }

    private sealed class Probe
    {
        public int Field = 2;
    }
}
