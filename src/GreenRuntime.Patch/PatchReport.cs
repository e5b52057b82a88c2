using System.Text;

namespace GreenRuntime;

/// <summary>What one <see cref="Patch"/> call did: each method patched now, already patched before, or refused.</summary>
/// <remarks>A method that could not be patched always appears in <see cref="Refused"/> with its reason; code that
/// calls it on a greenlet blocks the hub. Log or print the report at startup.</remarks>
public sealed class PatchReport
{
    internal PatchReport(IReadOnlyList<PatchedMethod> patched, IReadOnlyList<PatchedMethod> alreadyPatched, IReadOnlyList<RefusedMethod> refused)
    {
        Patched = patched;
        AlreadyPatched = alreadyPatched;
        Refused = refused;
    }

    /// <summary>Methods this call redirected.</summary>
    public IReadOnlyList<PatchedMethod> Patched { get; }

    /// <summary>Methods that were already redirected by an earlier call (patching twice is a no-op).</summary>
    public IReadOnlyList<PatchedMethod> AlreadyPatched { get; }

    /// <summary>Methods not redirected, each with the reason.</summary>
    public IReadOnlyList<RefusedMethod> Refused { get; }

    /// <summary>One line per method: "patched", "already patched" or "refused: reason".</summary>
    public override string ToString()
    {
        var text = new StringBuilder();
        text.Append($"{Patched.Count} patched, {AlreadyPatched.Count} already patched, {Refused.Count} refused");
        foreach (var m in Patched) text.Append($"\n  patched          {m}");
        foreach (var m in AlreadyPatched) text.Append($"\n  already patched  {m}");
        foreach (var m in Refused) text.Append($"\n  refused          {m}");
        return text.ToString();
    }
}
