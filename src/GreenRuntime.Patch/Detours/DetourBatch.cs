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
/// <param name="Staging">Checks, JIT compiles of targets and replacements, trampolines, callbacks (steps 2-9).</param>
/// <param name="Wait">The wait for threads inside the bodies' first bytes (one per round of writes).</param>
/// <param name="Writing">Diverting, writing the jumps and the late-body check, without the wait (steps 10-11).</param>
internal readonly record struct BatchTimings(int Requested, int Created, TimeSpan Staging, TimeSpan Wait, TimeSpan Writing);
