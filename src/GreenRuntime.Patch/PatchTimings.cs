using GreenRuntime.Detours;

namespace GreenRuntime;

/// <summary>Where the time of one <see cref="Patch"/> call went (bench/GreenRuntime.Benchmarks, mode <c>patch-startup</c>).</summary>
/// <param name="Lookup">Finding the patch sets' methods by reflection (first use of each set only; zero for single-set calls).</param>
/// <param name="Support">Waiting for the engine's gate: runtime checks, JIT guard install and self-test (first call only;
/// <see cref="Patch.All"/> starts it on another thread, so this is what did not overlap with the lookup and the checks).</param>
/// <param name="Checks">Warm-up calls and the tail-call guard, before the engine.</param>
/// <param name="Engine">The detour batch: staging (JIT compiles of targets and replacements, trampolines), the wait, the writes.</param>
/// <param name="Total">Everything under the patch lock (all of the above except <paramref name="Lookup"/>, plus the report).</param>
internal sealed record PatchTimings(TimeSpan Lookup, TimeSpan Support, TimeSpan Checks, BatchTimings Engine, TimeSpan Total);
