using System.Reflection;

namespace GreenRuntime.Detours;

/// <summary>One detour to create in a batch (<see cref="Detour.CreateBatch"/>).</summary>
/// <param name="Target">The method whose calls are redirected.</param>
/// <param name="Replacement">The static replacement.</param>
/// <param name="BeforeLive">Called with the detour after its original can be called and before it is live; null for none.</param>
internal readonly record struct DetourRequest(MethodBase Target, MethodInfo Replacement, Action<Detour>? BeforeLive = null);

/// <summary>What became of one <see cref="DetourRequest"/>: exactly one of the two is set.</summary>
/// <param name="Detour">The live detour.</param>
/// <param name="Error">Why there is none: the exception <c>Detour.Create</c> would have thrown for this request alone.</param>
internal readonly record struct DetourOutcome(Detour? Detour, Exception? Error);

/// <summary>Where the time of one batch went.</summary>
/// <param name="Requested">Requests in the batch.</param>
/// <param name="Created">Detours that went live.</param>
/// <param name="Staging">Checks, JIT compiles of the targets, prologue analysis, trampolines (steps 2-8).</param>
/// <param name="Finishing">While calls are diverted: compiling the replacements, beforeLive callbacks, NotInline bits.</param>
/// <param name="Slept">The rest of the wait for threads inside the bodies' first bytes (25 ms minus <paramref name="Finishing"/>).</param>
/// <param name="Writing">Writing the jumps and the late-body check.</param>
/// <param name="Rediverted">Diversions the runtime undid before their jump was written, each made again with a new wait.</param>
internal readonly record struct BatchTimings(int Requested, int Created, TimeSpan Staging, TimeSpan Finishing, TimeSpan Slept, TimeSpan Writing, int Rediverted = 0);
