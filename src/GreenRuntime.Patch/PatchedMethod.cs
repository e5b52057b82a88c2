using System.Reflection;

namespace GreenRuntime;

/// <summary>A BCL method that a patch set redirects to its cooperative replacement.</summary>
public sealed class PatchedMethod
{
    internal PatchedMethod(string set, MethodBase method, string description)
    {
        Set = set;
        Method = method;
        Description = description;
    }

    /// <summary>The patch set: Time, Sockets, Dns, Files, Tasks, Threading, Processes or Stdin.</summary>
    public string Set { get; }

    /// <summary>The redirected method (possibly non-public: the funnel the public overloads call).</summary>
    public MethodBase Method { get; }

    /// <summary>The method as "Type.Name(ParameterTypes)".</summary>
    public string Description { get; }

    /// <summary>"Set: Type.Name(ParameterTypes)".</summary>
    public override string ToString() => $"{Set}: {Description}";
}
