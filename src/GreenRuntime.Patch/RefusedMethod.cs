using System.Reflection;

namespace GreenRuntime;

/// <summary>A method a patch set is about but did not redirect, and why. Calls to it still block the hub.</summary>
public sealed class RefusedMethod
{
    internal RefusedMethod(string set, MethodBase? method, string description, string reason, bool nothingLost = false)
    {
        NothingLost = nothingLost;
        Set = set;
        Method = method;
        Description = description;
        Reason = reason;
    }

    /// <summary>The patch set.</summary>
    public string Set { get; }

    /// <summary>The method, or null when it does not exist in this runtime or names several methods.</summary>
    public MethodBase? Method { get; }

    /// <summary>The method as "Type.Name(ParameterTypes)".</summary>
    public string Description { get; }

    /// <summary>Why it was not redirected: the detour engine's refusal, or a design limit.</summary>
    public string Reason { get; }

    /// <summary>No call loses cooperation by it: the set leaves the method alone by design, or its calls reach a patched
    /// funnel anyway. Logged as information, not as a warning (every process has them).</summary>
    internal bool NothingLost { get; }

    /// <summary>"Set: Type.Name(ParameterTypes): reason".</summary>
    public override string ToString() => $"{Set}: {Description}: {Reason}";
}
