extern alias PatchAssembly;

using System.Reflection;
using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>The Patch class, reachable from namespaces where <c>GreenRuntime.Patch</c> means the namespace.</summary>
internal static class PatchAssemblyAccess
{
    public static PatchAssembly::GreenRuntime.PatchReport All() => Patching.All();

    public static void UndoAll() => Patching.UndoAll();

    public static bool IsPatched(MethodBase method) => Patching.IsPatched(method);
}
