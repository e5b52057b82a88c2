// Patch sets: which BCL methods each Patch.* call redirects, and to what.
//
// A patch set is a list of patch points (target method -> cooperative replacement + the slot through which
// the replacement reaches the original) and a list of known refusals (methods the set is about but cannot
// make cooperative, each with the reason). Patch applies the points through the detour engine and reports
// both lists; nothing is ever skipped silently.
//
// Choosing targets (docs/detours.md, "Inlining that already happened"): a detour only sees calls that reach the target's body. A
// caller compiled before the patch — ReadyToRun framework code included — keeps any inlined copy of the
// target. So each point is a method that cannot have been inlined: [NoInlining]/[NoOptimization] methods,
// or large methods (the JIT does not inline IL bodies beyond ~100 bytes without AggressiveInlining), chosen
// as the funnel the small public overloads call. Where a small public overload is itself the only entry
// point, it is patched as well and the docs say so.

using System.Reflection;
using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>The targets of one <c>Patch.*</c> call.</summary>
internal abstract class PatchSet
{
    /// <summary>The set's name, as in <see cref="PatchedMethod.Set"/>: Time, Sockets, Dns, ...</summary>
    public abstract string Name { get; }

    /// <summary>The methods this set redirects.</summary>
    public abstract IReadOnlyList<PatchPoint> Points { get; }

    /// <summary>Methods this set is about but does not redirect, with the reason, and whether their calls block the hub.</summary>
    public virtual IReadOnlyList<(string Method, string Reason, bool Blocks)> KnownRefusals => [];

    /// <summary>A point whose target is found by name and parameter types, and whose replacement is the
    /// static method <paramref name="replacementName"/> of <paramref name="replacementType"/> with the
    /// target's parameters (<c>this</c> first for an instance target).</summary>
    protected static PatchPoint Point(Type declaring, string name, Type[] parameters, Type replacementType, string replacementName, IOriginalSlot slot)
    {
        const BindingFlags any = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        var target = declaring.GetMethod(name, any, parameters);
        string description = $"{declaring.FullName}.{name}({string.Join(", ", parameters.Select(p => p.Name))})";
        Type[] replacementParameters = target is null || target.IsStatic ? parameters : [declaring, .. parameters];
        var replacement = replacementType.GetMethod(replacementName, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static, replacementParameters)
            ?? throw new InvalidOperationException($"Internal error: {replacementType.Name}.{replacementName} with the parameters of {description} is missing.");
        return new PatchPoint(description, target, replacement, slot);
    }
}

/// <summary>One target method, its replacement and the slot that gives the replacement the original.</summary>
/// <param name="Description">The target as "Type.Method(ParameterTypes)", also when it does not exist here.</param>
/// <param name="Target">The target, or null when this runtime has no such method (reported as refused).</param>
/// <param name="Replacement">The static cooperative method.</param>
/// <param name="Slot">Where the replacement finds the original.</param>
/// <param name="WarmUp">Calls the target once before it is detoured, so that it has compiled code and a
/// fixed-up precode (see TailCallGuard); null when PrepareMethod is enough.</param>
/// <param name="CoveredBy">When the target only forwards to another patched point, that point: a refusal of
/// this one then says that its calls are cooperative anyway.</param>
internal sealed record PatchPoint(string Description, MethodInfo? Target, MethodInfo Replacement, IOriginalSlot Slot, Action? WarmUp = null, string? CoveredBy = null);
