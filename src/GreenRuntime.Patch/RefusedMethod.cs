using System.Reflection;

namespace GreenRuntime;

/// <summary>A method a patch set is about but did not redirect, and why. Calls to it block the hub unless
/// <see cref="LosesCooperation"/> is false (its calls reach a patched method anyway, or it does not wait).</summary>
public sealed class RefusedMethod
{
    internal RefusedMethod(string set, MethodBase? method, string description, string reason, bool informational = false, bool losesCooperation = true)
    {
        Informational = informational;
        LosesCooperation = losesCooperation;
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

    /// <summary>Whether calls to it on a greenlet block the hub. False when its calls reach a patched method anyway
    /// (<c>Thread.Sleep(TimeSpan)</c> calls the patched <c>Thread.Sleep(int)</c>) or it does not wait
    /// (<c>Thread.SpinWait</c>).</summary>
    public bool LosesCooperation { get; }

    /// <summary>Logged as information rather than as a warning: a design limit of a patch set, which every process
    /// has, or a refusal that loses no cooperation.</summary>
    internal bool Informational { get; }

    /// <summary>"Set: Type.Name(ParameterTypes): reason".</summary>
    public override string ToString() => $"{Set}: {Description}: {Reason}";
}
