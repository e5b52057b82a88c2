// The detour engine: redirects every call of a managed method to a static replacement, and can still call
// the original. .NET 10, linux-x64 only; everything runtime-specific is in RuntimeLayout.cs.
//
// Glossary
//
//   target       the method whose calls are redirected.
//   replacement  the static method that receives them; `this` first for instance targets.
//   MethodDesc   the runtime's descriptor of a method (RuntimeMethodHandle.Value).
//   entry        the method's stable entry point (GetFunctionPointer): a precode, never the code itself.
//   precode      a small runtime stub that jumps to the method's current code through a data cell.
//   body         the native code the method currently runs (R2R, tier-0, instrumented, tier-1 or full-opt).
//   patch        the 5-byte `E9 rel32` jump we write over the first bytes of a body.
//   trampoline   the overwritten instructions, relocated to near memory, then a jump back into the body:
//                calling it runs the original.
//   JIT guard    machine code in the JIT's compileMethod vtable slot that refuses to compile detoured methods.
//
// Design chosen: patch the body, freeze the method, forbid inlining.
//
//   Callers never run the precode's code bytes: JIT-compiled callers load the precode's data cell and call
//   whatever it holds, and the runtime rewrites that cell whenever tiering publishes new code. So the only
//   place every caller passes through is the body itself. We write a jump at its start, and then make sure
//   the runtime never swaps that body for a new one: the JIT guard answers CORJIT_BADCODE for any later
//   compile of the method, which the tiering manager treats as "keep the old code". Callers compiled
//   after the detour must not inline the target (inlined copies never reach the body), so we set the
//   MethodDesc's NotInline bit. Measured result: 100% of 153,100 calls redirected across tier-up, OSR,
//   delegates, function pointers, fresh callers and two threads (docs/detours.md).
//
// Designs rejected
//
//   - Rewriting the precode or its data cell: only delegate/ldftn calls execute precode bytes, and the
//     runtime overwrites the cell at every tier publish (measured: 1.4-2.6% of calls redirected).
//   - Patching the body without the JIT guard: lost at the first tier-up (a fresh tier-1 body).
//   - A managed (UnmanagedCallersOnly) JIT hook: it is a frame on every JIT compile's stack, and a C++
//     exception thrown by the JIT (missing assembly) aborts the process when it meets that frame.
//   - Writing the jump with plain stores: a thread entering the body mid-write executes torn bytes.
//     The jump goes in with one 8-byte compare-exchange instead.
//   - Copying the original's IL into a DynamicMethod to call it (Harmony's way): safe but much larger;
//     the relocated prologue is small and measured to work, and refuses what it does not understand.
//
// Protocol of Detour.Create and of a batch (CreateBatch: Patch.All's way; Create is a batch of one). All
// under one global lock; for each detour every check happens before its first write.
//
//   1. Gate: runtime major, OS, architecture (RuntimeLayout.Check); JIT GUID and guard install (JitGuard);
//      the self-test, once per process.
//   Staging, one request after the other (a failure refuses that request only; nothing of it is live):
//   2. Metadata checks (TargetRules): shape of the target, signature of the replacement.
//   3. Refuse a target we already detour, or that the batch names twice (InvalidOperationException), and JIT
//      intrinsics (MethodDesc bit).
//   4. PrepareMethod the target, so it has code.
//   5. Walk the entry to the body (CodeLocator). A body that starts with a jump was patched by someone
//      else: refuse. Decode its prologue (Trampoline.Analyze): refuse a too-small body, a call, anything
//      not understood.
//   6. Add the MethodDesc to the JIT guard. From now on no new body can appear for it... except one whose
//      compile had already started, so:
//   7. Walk to the body again and re-check it (a tier-1 compile may have finished between 5 and 6).
//   8. Build the trampoline near the body.
//   Going live, all staged detours together:
//   9. Divert new calls around every body's first instructions: point the runtime cell that leads to each
//      body at its trampoline, which runs the same instructions elsewhere.
//  10. While they are diverted, finish each detour: PrepareMethod the replacement, run the caller's
//      beforeLive callback (GetOriginal works from here on and no call is redirected yet, so a replacement
//      can have its original in hand before its first call), set the NotInline bit (CAS on the 32-bit word
//      at MethodDesc+4), compute the jump (through a near stub if the replacement is beyond rel32 reach).
//      Then sleep until 25 ms have passed since step 9, and until every thread that was preempted at step 9
//      has run again (PreemptedThreads.cs), so that threads preempted inside a body's first bytes leave
//      them. Then body by body, right before its jump: walk to it again; where the runtime re-pointed its
//      stubs meanwhile (tiering does) and new calls reach the body once more, divert the cell found now and
//      leave this jump to a whole wait of its own after the others (at most 8 diversions); otherwise
//      compare-exchange `E9 rel32` into the aligned qword holding the body's start and point its cell back
//      at what it held. One wait serves the whole batch: what it waits for (threads inside some body's
//      first bytes when its calls were diverted) does not depend on how many bodies there are.
//  11. Walk once more; if a compile that was already running published another body meanwhile, patch that
//      one too (again all together, with one wait).
//
// Protocol of Dispose: compare-exchange each patched qword back to its original value. The method stays
// in the JIT guard table and keeps its NotInline bit: it keeps running its current (now original) body at
// its current tier. Removing it would be unsafe only in a narrow way (a refused tier-up is not retried, so
// nothing would be gained), and leaving it is always safe. Trampolines and stubs are never freed: a thread
// may still be running one.
//
// Known hazard, reduced but not eliminated: the jump overwrites several instructions, so a thread that
// has executed the first of them (`push rbp`) and not the rest would resume inside the jump's
// displacement. Step 9's diversion plus a 25 ms wait lets such threads leave the window, a thread
// the OS kept off the CPU past the wait is waited for until it has run again (PreemptedThreads.cs, up
// to 5 s), and a diversion the runtime undoes before the jump is made again; a thread stopped for
// longer (a debugger, SIGSTOP), one entering through a backpatched vtable slot, or a runtime write to
// the stubs in the microseconds between a body's last check and its jump is not covered. Dispose has
// no such hazard (no thread can be inside a single jump instruction). See docs/detours.md.

using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Redirects every call of a managed method (the target) to a static replacement method, and lets the
/// replacement call the original implementation. Dispose to undo.
/// </summary>
/// <remarks>
/// <para>
/// Supported on .NET 10, x64 Linux only; <see cref="EnsureSupported"/> says why not elsewhere. Works with
/// tiered compilation on or off, ReadyToRun code, dynamic PGO and W^X.
/// </para>
/// <para>
/// Calls inlined into callers compiled <em>before</em> the detour (including ReadyToRun framework code)
/// are not redirected. Prefer targets marked <c>[MethodImpl(NoInlining)]</c> or large public entry points,
/// and detour at startup.
/// </para>
/// <para>
/// After <see cref="Dispose"/>, the target runs its original code again, but is no longer re-compiled by
/// tiering (it stays at the tier it had) and is never inlined into callers compiled later.
/// </para>
/// </remarks>
/// <example>
/// <code>
/// static Detour? sleep;
/// static void MySleep(int ms) { Console.WriteLine($"sleep {ms}"); sleep!.GetOriginal&lt;Action&lt;int&gt;&gt;()(ms); }
/// sleep = Detour.Create(typeof(Thread).GetMethod("Sleep", [typeof(int)])!, typeof(Program).GetMethod("MySleep")!);
/// </code>
/// </example>
[DebuggerDisplay("{Description,nq} applied={IsApplied}")]
public sealed class Detour : IDisposable
{
    /// <summary>The least time between diverting a body's calls and writing its jump: 25 ms, several CFS scheduling periods.</summary>
    private const long QuiesceNanoseconds = 25_000_000;

    /// <summary>How many times a batch diverts its calls before it writes its jumps anyway (see <see cref="GoLive"/>).</summary>
    private const int MaxDiversions = 8;

    private static readonly Lock Gate = new();
    private static readonly Dictionary<nint, Detour> Active = new();
    private static Exception? supportFailure;
    private static volatile bool supportChecked;
    private static bool inBeforeLive; // under Gate: a beforeLive callback is running on the thread holding it

    private readonly MethodInfo replacement;
    private readonly nint methodDesc;
    private readonly List<BodyPatch> patches = new();
    private readonly nint trampoline;
    private readonly nint entry;
    private nint replacementEntry; // set (under Gate) once the replacement is compiled, before the first jump to it
    private readonly ConcurrentDictionary<Type, Delegate> originals = new();
    private volatile bool applied;

    /// <summary>One patched body: the qword we swapped and both of its values.</summary>
    private readonly record struct BodyPatch(nint Body, nint Qword, long Original, long Patched);

    /// <summary>
    /// One body about to be patched: where calls are diverted meanwhile, and what is still to do before its
    /// jump can be written.
    /// </summary>
    private sealed class PendingWrite(Detour detour, nint body, nint divertTo, Action<Detour>? beforeLive, bool firstBody)
    {
        public Detour Detour { get; } = detour;

        public nint Body { get; } = body;

        /// <summary>The runtime cell pointed at <see cref="DivertTo"/> while the jump waits (0: none).</summary>
        public nint Cell { get; set; }

        /// <summary>What <see cref="Cell"/> held before: it goes back once the jump is written.</summary>
        public nint CellWas { get; set; }

        /// <summary>The body's trampoline: runs the same first instructions elsewhere.</summary>
        public nint DivertTo { get; } = divertTo;

        public Action<Detour>? BeforeLive { get; } = beforeLive;

        /// <summary>The detour's first body (not a late one): its replacement still has to be compiled, its callback run.</summary>
        public bool FirstBody { get; } = firstBody;

        /// <summary>New calls do not reach the body's first bytes (they run the trampoline instead).</summary>
        public bool Diverted { get; set; }

        public BodyPatch Patch { get; set; }

        public Exception? Error { get; set; }
    }

    private Detour(MethodBase target, MethodInfo replacement, nint methodDesc, nint trampoline, nint entry)
    {
        Target = target;
        this.replacement = replacement;
        this.methodDesc = methodDesc;
        this.trampoline = trampoline;
        this.entry = entry;
    }

    /// <summary>How long the phases of the last <see cref="CreateBatch"/> (or <see cref="Create(MethodBase, MethodInfo)"/>) took; for the start-up benchmark.</summary>
    internal static BatchTimings LastBatch { get; private set; }

    /// <summary>The method whose calls are redirected.</summary>
    public MethodBase Target { get; }

    /// <summary>True from creation until <see cref="Dispose"/>.</summary>
    public bool IsApplied => applied;

    /// <summary>
    /// True if detours work in this process: the runtime, JIT and memory policy are the verified ones and
    /// the self-test passed.
    /// </summary>
    public static bool IsSupported
    {
        get
        {
            try
            {
                EnsureSupported();
                return true;
            }
            catch (PlatformNotSupportedException)
            {
                return false;
            }
        }
    }

    private string Description => $"{TargetRules.Describe(Target)} -> {TargetRules.Describe(replacement)}";

    /// <summary>
    /// Checks the runtime version, OS, architecture, JIT version and memory policy, installs the JIT guard
    /// and runs the self-test (once per process).
    /// </summary>
    /// <exception cref="PlatformNotSupportedException">Detours cannot work here; the message says why.</exception>
    public static void EnsureSupported()
    {
        lock (Gate)
        {
            ThrowIfInCallback();
            EnsureSupportedLocked();
        }
    }

    /// <summary>
    /// The cheap part of <see cref="EnsureSupported"/>: null if this runtime, OS and architecture are the verified
    /// ones (and no earlier full check failed), otherwise why not. It loads nothing and writes nothing.
    /// </summary>
    internal static string? PlatformProblem()
    {
        if (supportChecked && Volatile.Read(ref supportFailure) is { } failure)
        {
            return failure.Message;
        }

        try
        {
            RuntimeLayout.Check();
            return null;
        }
        catch (PlatformNotSupportedException e)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// Starts <see cref="EnsureSupported"/> on a background thread, unless the check already ran: it costs tens
    /// of milliseconds, mostly JIT compiles of the engine and of Iced's decoder tables, and does not depend on
    /// what will be detoured, so a caller can overlap it with its own preparation (<c>Patch.All</c> finds its
    /// methods by reflection meanwhile). A later
    /// <see cref="Create(MethodBase, MethodInfo)"/> or <see cref="EnsureSupported"/> waits for the check (the
    /// engine lock) and reports its outcome.
    /// </summary>
    internal static void PrepareInBackground()
    {
        if (supportChecked)
        {
            return;
        }

        var thread = new Thread(static () =>
        {
            try
            {
                EnsureSupported();
            }
            catch (PlatformNotSupportedException)
            {
                // Kept by the engine and reported to the next caller.
            }
        })
        {
            IsBackground = true,
            Name = "GreenRuntime detour check",
        };
        thread.UnsafeStart();
    }

    /// <summary>
    /// Redirects every call of <paramref name="target"/> to <paramref name="replacement"/>.
    /// </summary>
    /// <param name="target">A method or constructor with an IL body: not a generic method; of a generic type, only an
    /// instance method of a class instantiated over reference types, and then the detour covers every such
    /// instantiation (they share its code).</param>
    /// <param name="replacement">
    /// A static method with the target's return type and parameters; for an instance target, <c>this</c>
    /// comes first (as the declaring type, or <c>ref T</c> when the declaring type is a struct).
    /// </param>
    /// <returns>A handle that calls the original (<see cref="GetOriginal{TDelegate}"/>) and undoes the detour.</returns>
    /// <exception cref="ArgumentException">The replacement is not static or its signature does not match.</exception>
    /// <exception cref="NotSupportedException">The target cannot be detoured; the message says why. Nothing was written.</exception>
    /// <exception cref="InvalidOperationException">The target is already detoured by another <see cref="Detour"/>.</exception>
    /// <exception cref="PlatformNotSupportedException">Detours cannot work in this process.</exception>
    public static Detour Create(MethodBase target, MethodInfo replacement) => Create(target, replacement, null);

    /// <summary>
    /// Redirects every call of <paramref name="target"/> to <paramref name="replacement"/>, running
    /// <paramref name="beforeLive"/> with the new detour after its original can be called and before the first
    /// call is redirected.
    /// </summary>
    /// <remarks>
    /// Without the callback, a call that arrives on another thread between the jump being written and
    /// <see cref="Create(MethodBase, MethodInfo)"/> returning reaches the replacement before the caller could
    /// store the handle it needs to call the original. In <paramref name="beforeLive"/>,
    /// <see cref="GetOriginal{TDelegate}"/> works (and the target still runs its original code when called
    /// directly), so the replacement can find its original from the very first redirected call. The callback runs
    /// under the engine's lock: it must not create or dispose detours (that throws). If it throws, the detour is
    /// not applied and the exception propagates; the target then stays as it was, except that tiering no longer
    /// re-compiles it.
    /// </remarks>
    /// <example>
    /// <code>
    /// static Action&lt;int&gt;? originalSleep;
    /// static void MySleep(int ms) => originalSleep!(ms);
    /// Detour.Create(sleepMethod, mySleepMethod, d => originalSleep = d.GetOriginal&lt;Action&lt;int&gt;&gt;());
    /// </code>
    /// </example>
    /// <inheritdoc cref="Create(MethodBase, MethodInfo)"/>
    /// <param name="target">As for <see cref="Create(MethodBase, MethodInfo)"/>.</param>
    /// <param name="replacement">A static method with the target's signature (<c>this</c> first for instance targets).</param>
    /// <param name="beforeLive">Called once with the detour before it goes live; null for none.</param>
    public static Detour Create(MethodBase target, MethodInfo replacement, Action<Detour>? beforeLive)
    {
        lock (Gate)
        {
            ThrowIfInCallback();
            EnsureSupportedLocked();
            return CreateOneLocked(target, replacement, beforeLive, othersMayCall: true);
        }
    }

    /// <summary>
    /// Creates several detours at once: each request is checked and prepared on its own (a refusal affects
    /// only that request), then all of them go live together after a single wait, instead of one wait per
    /// detour. This is what makes <c>Patch.All()</c> fast.
    /// </summary>
    /// <param name="requests">Targets, replacements and optional beforeLive callbacks, as for <see cref="Create(MethodBase, MethodInfo, Action{Detour})"/>.</param>
    /// <returns>One outcome per request, in order: the detour, or the exception <see cref="Create(MethodBase, MethodInfo, Action{Detour})"/> would have thrown.</returns>
    /// <exception cref="PlatformNotSupportedException">Detours cannot work in this process (nothing was attempted).</exception>
    internal static DetourOutcome[] CreateBatch(IReadOnlyList<DetourRequest> requests)
    {
        lock (Gate)
        {
            ThrowIfInCallback();
            EnsureSupportedLocked();
            return CreateBatchLocked(requests, othersMayCall: true);
        }
    }

    /// <summary>
    /// Returns a delegate that runs the target's original implementation, bypassing the detour. Its shape
    /// is the replacement's: same return type and parameters, <c>this</c> first for instance targets.
    /// </summary>
    /// <typeparam name="TDelegate">A delegate type whose Invoke matches the replacement's signature.</typeparam>
    /// <remarks>The delegate keeps working after <see cref="Dispose"/> (it then does what a direct call does).</remarks>
    /// <exception cref="ArgumentException"><typeparamref name="TDelegate"/> does not match the replacement.</exception>
    public TDelegate GetOriginal<TDelegate>()
        where TDelegate : Delegate =>
        (TDelegate)originals.GetOrAdd(typeof(TDelegate), static (type, self) => self.BuildOriginal(type), this);

    /// <summary>
    /// The entry of the original implementation (the trampoline) for a managed-convention <c>calli</c> /
    /// <c>delegate*</c> call with the replacement's signature: what <see cref="GetOriginal{TDelegate}"/>'s
    /// delegate calls, without the delegate and its static-method shuffle thunk. Valid for the process's
    /// lifetime, also after <see cref="Dispose"/>.
    /// </summary>
    internal nint OriginalEntry => trampoline;

    /// <summary>Restores the original bytes of the target's body. Idempotent.</summary>
    /// <exception cref="InvalidOperationException">Someone else rewrote the patched bytes; nothing was restored.</exception>
    public void Dispose()
    {
        lock (Gate)
        {
            ThrowIfInCallback();
            if (!applied)
            {
                return;
            }

            CodeMemory.Refresh();
            foreach (BodyPatch patch in patches)
            {
                if (!CodeMemory.CompareExchangeCode(patch.Qword, patch.Patched, patch.Original))
                {
                    throw new InvalidOperationException(
                        $"Cannot undo the detour of {TargetRules.Describe(Target)}: the patched bytes at 0x{patch.Body:x} " +
                        "were changed by someone else.");
                }
            }

            applied = false;
            Active.Remove(methodDesc);
            AssertRegistryLocked();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Description;

    private static void EnsureSupportedLocked()
    {
        if (supportChecked)
        {
            if (supportFailure is not null)
            {
                throw new PlatformNotSupportedException(supportFailure.Message, supportFailure);
            }

            return;
        }

        supportChecked = true;
        try
        {
            RuntimeLayout.Check();
            JitGuard.EnsureInstalled();
            // The self-test's dummy is private and called only by this thread, under this lock: no other
            // thread can be inside its first bytes, so its detour needs no wait.
            SelfTest.Run((t, r) => CreateOneLocked(t, r, null, othersMayCall: false));
        }
        catch (Exception e)
        {
            supportFailure = e is PlatformNotSupportedException ? e
                : new PlatformNotSupportedException($"Detours are not supported in this process: {e.Message}", e);
            if (ReferenceEquals(supportFailure, e))
            {
                throw;
            }

            throw supportFailure;
        }
    }

    private static void ThrowIfInCallback()
    {
        if (inBeforeLive)
        {
            throw new InvalidOperationException(
                "A Detour.Create beforeLive callback must not create, dispose or check detours: it runs under the engine's lock, " +
                "in the middle of creating one. Do that after Create returns.");
        }
    }

    private static Detour CreateOneLocked(MethodBase target, MethodInfo replacement, Action<Detour>? beforeLive, bool othersMayCall)
    {
        DetourOutcome outcome = CreateBatchLocked([new DetourRequest(target, replacement, beforeLive)], othersMayCall)[0];
        if (outcome.Error is { } error)
        {
            ExceptionDispatchInfo.Throw(error);
        }

        return outcome.Detour!;
    }

    /// <param name="requests">What to detour.</param>
    /// <param name="othersMayCall">False only when no other thread can be calling any target (the
    /// self-test's private dummy): then the diversion needs no wait.</param>
    private static DetourOutcome[] CreateBatchLocked(IReadOnlyList<DetourRequest> requests, bool othersMayCall)
    {
        long start = Stopwatch.GetTimestamp();
        var outcomes = new DetourOutcome[requests.Count];
        var staged = new List<(int Index, PendingWrite Write)>(requests.Count);
        var stagedMethods = new HashSet<nint>();
        CodeMemory.Refresh();

        // Steps 2-8, request by request.
        for (int i = 0; i < requests.Count; i++)
        {
            try
            {
                PendingWrite write = Stage(requests[i], stagedMethods);
                stagedMethods.Add(write.Detour.methodDesc);
                staged.Add((i, write));
            }
            catch (Exception e)
            {
                outcomes[i] = new DetourOutcome(null, e);
            }
        }

        // Steps 9-10, all together.
        var timings = new BatchTimings(requests.Count, 0, Stopwatch.GetElapsedTime(start), default, default, default);
        GoLive(staged.ConvertAll(s => s.Write), othersMayCall, ref timings);
        var live = new List<Detour>(staged.Count);
        foreach ((int index, PendingWrite write) in staged)
        {
            if (write.Error is { } error)
            {
                outcomes[index] = new DetourOutcome(null, error);
                continue;
            }

            Detour detour = write.Detour;
            detour.patches.Add(write.Patch);
            detour.applied = true;
            Active.Add(detour.methodDesc, detour);
            outcomes[index] = new DetourOutcome(detour, null);
            live.Add(detour);
        }

        // Step 11.
        PatchLateBodies(live, othersMayCall, ref timings);
        AssertRegistryLocked();
        LastBatch = timings with { Created = live.Count };
        return outcomes;
    }

    /// <summary>Steps 2-8 for one request, up to the trampoline: nothing of it is live yet.</summary>
    private static unsafe PendingWrite Stage(DetourRequest request, HashSet<nint> stagedMethods)
    {
        (MethodBase target, MethodInfo replacement, Action<Detour>? beforeLive) = request;
        TargetRules.Validate(target, replacement);
        string name = TargetRules.Describe(target);
        nint md = target.MethodHandle.Value;

        // Step 3.
        if (Active.ContainsKey(md) || stagedMethods.Contains(md))
        {
            throw new InvalidOperationException(
                $"{name} is already detoured; dispose the existing Detour before creating another one.");
        }

        if ((Volatile.Read(ref *(uint*)(md + RuntimeLayout.MethodDescFlagsWordOffset)) & RuntimeLayout.IntrinsicMask) != 0)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: the runtime marks it as a JIT intrinsic; the JIT may expand it inline at any call site.");
        }

        // Step 4 (the replacement is compiled in step 10).
        RuntimeHelpers.PrepareMethod(target.MethodHandle);
        nint entry = target.MethodHandle.GetFunctionPointer();

        // Step 5: everything that can refuse happens before the method joins the JIT guard.
        Trampoline.Prologue first = CheckedBody(entry, name, md, out _);

        // Steps 6-7.
        JitGuard.Add(md);
        Trampoline.Prologue prologue = CheckedBody(entry, name, md, out CodeLocator.Body current, first);
        Trampoline.AssertCovers(prologue);

        // Step 8.
        nint trampoline = Trampoline.Build(prologue);
        var detour = new Detour(target, replacement, md, trampoline, entry);
        return new PendingWrite(detour, current.Address, trampoline, beforeLive, firstBody: true);
    }

    /// <summary>
    /// Step 11: a compile that was already running when a method joined the JIT guard may have published
    /// another body meanwhile; patch those too (up to three rounds, each with one wait for all of them).
    /// </summary>
    /// <remarks>
    /// A late body that cannot be patched only means that some calls reach the original: the first body is
    /// patched and stays owned by its registered detour (or Dispose could never undo it), so nothing here
    /// refuses the detour.
    /// </remarks>
    private static void PatchLateBodies(List<Detour> live, bool othersMayCall, ref BatchTimings timings)
    {
        for (int round = 0; round < 3 && live.Count > 0; round++)
        {
            var late = new List<PendingWrite>();
            foreach (Detour detour in live)
            {
                CodeLocator.Body later = CodeLocator.FindBody(detour.entry);
                if (later.HasNoCode || later.StartsWithJump || detour.patches.Any(p => p.Body == later.Address))
                {
                    continue;
                }

                try
                {
                    nint laterTrampoline = Trampoline.Build(Trampoline.Analyze(later.Address, TargetRules.Describe(detour.Target), detour.methodDesc));
                    late.Add(new PendingWrite(detour, later.Address, laterTrampoline, null, firstBody: false));
                }
                catch (NotSupportedException)
                {
                    // Unpatchable late body: see remarks.
                }
            }

            if (late.Count == 0)
            {
                return;
            }

            GoLive(late, othersMayCall, ref timings);
            live = new List<Detour>();
            foreach (PendingWrite write in late)
            {
                if (write.Error is null)
                {
                    write.Detour.patches.Add(write.Patch);
                    live.Add(write.Detour);
                }
            }
        }
    }

    /// <summary>
    /// Finds the current body and refuses a foreign patch, a misaligned start or an unpatchable prologue;
    /// returns the body's decoded prologue (<paramref name="known"/>'s when the body is the one it describes:
    /// decoding and scanning a body again would only repeat the same work).
    /// </summary>
    private static Trampoline.Prologue CheckedBody(nint entry, string name, nint md, out CodeLocator.Body body, Trampoline.Prologue? known = null)
    {
        body = CodeLocator.FindBody(entry);
        if (body.HasNoCode)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: it has no compiled code even after PrepareMethod (its precode still leads to the " +
                "runtime's fixup thunk), so there is no body to patch.");
        }

        if (body.StartsWithJump)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: its body at 0x{body.Address:x} already starts with a jump to 0x{body.JumpTarget:x}; " +
                "another detour library (or a previous process-level patch) has redirected it.");
        }

        if ((body.Address & 7) + RuntimeLayout.JumpSize > 8)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: its body at 0x{body.Address:x} starts too close to an 8-byte boundary for the " +
                "jump to be written with one atomic compare-exchange.");
        }

        return known is not null && known.Body == body.Address ? known : Trampoline.Analyze(body.Address, name, md);
    }

    private static unsafe void SetNotInline(nint md)
    {
        ref uint word = ref *(uint*)(md + RuntimeLayout.MethodDescFlagsWordOffset);
        uint old;
        do
        {
            old = Volatile.Read(ref word);
        }
        while ((old & RuntimeLayout.NotInlineMask) == 0 && Interlocked.CompareExchange(ref word, old | RuntimeLayout.NotInlineMask, old) != old);
    }

    /// <summary>
    /// Steps 9-10: diverts new calls around every body, finishes each detour while they are diverted, waits,
    /// and writes the jumps. Sets each write's <see cref="PendingWrite.Patch"/> or <see cref="PendingWrite.Error"/>.
    /// </summary>
    /// <remarks>
    /// <para>
    /// The jump replaces several instructions (a prologue usually starts with the 1-byte <c>push rbp</c>).
    /// A thread that has executed the first of them and not yet the others would, after the write, resume
    /// in the middle of the jump's displacement: on a running core the store triggers a pipeline restart
    /// exactly at that boundary (seen as a NullReferenceException / SIGSEGV in the hammer test). So new
    /// calls are first diverted: the runtime cell the last entry stub jumps through (FixupPrecode target or
    /// call-counting target) is pointed at the trampoline, which runs the same prologue elsewhere and jumps
    /// back past it. At least <see cref="QuiesceNanoseconds"/> later, no thread that was inside the
    /// overwritten bytes is still there; the jump is written and the cell is pointed back at the (now
    /// patched) body. The runtime may rewrite its stubs during the wait and so undo a diversion; each
    /// method's entry stubs are walked again right before its jump, and a lost diversion is made again and
    /// its jump waits again.
    /// Callers that reach a body without that cell (backpatched vtable slots of virtual methods) and a
    /// thread kept off the CPU inside the first instructions for the whole wait are not covered; see
    /// docs/detours.md.
    /// </para>
    /// <para>
    /// One wait serves the whole batch: every cell is diverted before it starts and every jump is written
    /// after it ends, so a thread inside any of the bodies has had the whole wait to leave, exactly as with
    /// one body. The wait is a minimum time between diverting and writing, not idle time: the work that
    /// must precede a jump but not the diversion (compiling the replacement, the beforeLive callback, the
    /// NotInline bit, a near stub to the replacement) is done in it, and only the rest is slept
    /// (nanosleep, giving up the CPU).
    /// </para>
    /// </remarks>
    private static unsafe void GoLive(List<PendingWrite> writes, bool othersMayCall, ref BatchTimings timings)
    {
        // One fresh look at the memory map serves every write below: every body exists by now, and the
        // protection of a page that holds code does not change under us (see CodeMemory.WithWritablePage).
        CodeMemory.Refresh();
        long start = Stopwatch.GetTimestamp();
        foreach (PendingWrite write in writes)
        {
            write.Diverted = TryDivert(write);
        }

        long diverted = Stopwatch.GetTimestamp(); // the wait counts from the last diversion
        bool quiesce = othersMayCall && writes.Exists(w => w.Diverted);
        List<PreemptedThreads.Runnable> preempted = quiesce ? PreemptedThreads.Snapshot() : [];
        foreach (PendingWrite write in writes)
        {
            try
            {
                if (write.FirstBody)
                {
                    Finish(write.Detour, write.BeforeLive);
                }

                write.Patch = JumpPatch(write.Body, write.Detour.replacementEntry);
            }
            catch (Exception e)
            {
                write.Error = e;
            }
        }

        long work = Stopwatch.GetTimestamp();
        TimeSpan slept = default, writing = default;
        List<PendingWrite> pending = writes;
        for (int round = 1; ; round++)
        {
            long waitFrom = Stopwatch.GetTimestamp();
            if (quiesce)
            {
                // A signal can end nanosleep early: sleep until the whole wait has passed.
                long remaining;
                while ((remaining = QuiesceNanoseconds - (long)Stopwatch.GetElapsedTime(diverted).TotalNanoseconds) > 0)
                {
                    Quiesce(remaining);
                }

                // Then each thread that was preempted (runnable, off a CPU) at the diversion must have run again.
                PreemptedThreads.WaitUntilRunAgain(preempted, Quiesce);
            }

            long writeFrom = Stopwatch.GetTimestamp();
            List<PendingWrite> lost = [];
            foreach (PendingWrite write in pending)
            {
                BeforeWriteForTesting?.Invoke(write.Detour);

                // The runtime re-points its entry stubs on its own (tiering installs and removes call counting), and
                // such a write can undo a diversion at any moment of the wait, or while the jumps before this one were
                // written: calls then entered the body itself, and the wait proves nothing for them. Checked right
                // before this jump, so what is left uncovered is this one write's microseconds, not the batch's; a lost
                // diversion is made again and its jump waits a whole wait again, after the others have gone live.
                if (quiesce && round < MaxDiversions && write.Diverted && write.Error is null && CallsReachBody(write, out _))
                {
                    if (lost.Count == 0)
                    {
                        CodeMemory.Refresh(); // the runtime may have moved the path onto stubs allocated since
                    }

                    Undivert(write);
                    write.Diverted = TryDivert(write);
                    lost.Add(write);
                    continue;
                }

                WriteJump(write);
                Undivert(write);
            }

            slept += Stopwatch.GetElapsedTime(waitFrom, writeFrom);
            writing += Stopwatch.GetElapsedTime(writeFrom);
            if (lost.Count == 0)
            {
                break;
            }

            pending = lost;
            diverted = Stopwatch.GetTimestamp();
            preempted = PreemptedThreads.Snapshot();
            timings = timings with { Rediverted = timings.Rediverted + lost.Count };
        }

        timings = timings with
        {
            Finishing = timings.Finishing + Stopwatch.GetElapsedTime(start, work),
            Slept = timings.Slept + slept,
            Writing = timings.Writing + writing,
        };
    }

    /// <summary>Tests only: called before each jump of a batch is checked and written, from the thread that writes it.</summary>
    internal static Action<Detour>? BeforeWriteForTesting;

    /// <summary>Compare-exchanges the write's jump into its body; a failure becomes the write's <see cref="PendingWrite.Error"/>.</summary>
    private static void WriteJump(PendingWrite write)
    {
        if (write.Error is not null)
        {
            return;
        }

        BodyPatch patch = write.Patch;
        try
        {
            if (!CodeMemory.CompareExchangeCode(patch.Qword, patch.Original, patch.Patched))
            {
                write.Error = new InvalidOperationException(
                    $"Internal error: the first bytes of {TargetRules.Describe(write.Detour.Target)}'s body changed while the detour was being written.");
            }
        }
        catch (Exception e)
        {
            write.Error = e;
        }
    }

    /// <summary>
    /// Points the runtime cell through which new calls reach the write's body (the FixupPrecode target or the
    /// call-counting stub's target) at its trampoline, and records what it held. True when new calls no longer
    /// reach the body's first bytes; false when they reach it without a cell we can write (an immediate jump
    /// stub, a read-only page).
    /// </summary>
    private static unsafe bool TryDivert(PendingWrite write)
    {
        if (!CallsReachBody(write, out CodeLocator.Body path))
        {
            return true; // new calls run another body (one published late) or the trampoline already
        }

        if (path.Cell == 0 || CodeMemory.FindRegion(path.Cell) is not { } region || (region.Protection & Libc.ProtWrite) == 0)
        {
            return false;
        }

        // The cell holds the body or, for a method whose precode the runtime sent back to its prestub, the
        // precode's own fixup half, which ends in the same body: either way it is what goes back afterwards.
        nint held = Volatile.Read(ref *(nint*)path.Cell);
        if (Interlocked.CompareExchange(ref *(nint*)path.Cell, write.DivertTo, held) != held)
        {
            return false;
        }

        write.Cell = path.Cell;
        write.CellWas = held;
        return true;
    }

    /// <summary>
    /// Points a diverted cell back at what it held, if calls still pass through it. A cell the runtime has written
    /// since keeps its value; a cell the runtime took off the path (a call-counting stub it stopped using) is left
    /// alone, as the runtime may free the stub's memory.
    /// </summary>
    private static unsafe void Undivert(PendingWrite write)
    {
        if (write.Cell != 0)
        {
            if (CodeLocator.FindBody(write.Detour.entry).Cell == write.Cell)
            {
                _ = Interlocked.CompareExchange(ref *(nint*)write.Cell, write.CellWas, write.DivertTo);
            }

            write.Cell = 0;
        }
    }

    /// <summary>Whether a new call of the write's method, entering at its stable entry point, would run the body's
    /// first bytes; <paramref name="path"/> is where the walk of its entry stubs ended.</summary>
    private static bool CallsReachBody(PendingWrite write, out CodeLocator.Body path)
    {
        path = CodeLocator.FindBody(write.Detour.entry);
        return path.Address == write.Body || path.HasNoCode;
    }

    /// <summary>
    /// What a detour needs before its jump is written and not before its calls are diverted: its replacement
    /// compiled (so that the first redirected call does not compile it, possibly while holding a lock the
    /// compile needs), the caller's beforeLive callback (GetOriginal works from here on, and no call is
    /// redirected yet, so a replacement can have its original in hand before its first call), and the
    /// NotInline bit (callers compiled from now on keep calling the target).
    /// </summary>
    private static void Finish(Detour detour, Action<Detour>? beforeLive)
    {
        RuntimeHelpers.PrepareMethod(detour.replacement.MethodHandle);
        detour.replacementEntry = detour.replacement.MethodHandle.GetFunctionPointer();
        if (beforeLive is not null)
        {
            inBeforeLive = true;
            try
            {
                beforeLive(detour);
            }
            finally
            {
                inBeforeLive = false;
            }
        }

        SetNotInline(detour.methodDesc);
    }

    /// <summary>Computes the qword that holds <c>E9 rel32</c> to the replacement (or a near stub to it) at <paramref name="body"/>.</summary>
    private static unsafe BodyPatch JumpPatch(nint body, nint replacementEntry)
    {
        nint jumpTarget = Trampoline.ReachableJumpTarget(body, replacementEntry);
        nint qword = body & ~(nint)7;
        int offset = (int)(body - qword);
        long original = Volatile.Read(ref *(long*)qword);

        Span<byte> bytes = stackalloc byte[8];
        BitConverter.TryWriteBytes(bytes, original);
        bytes[offset] = 0xE9;
        BitConverter.TryWriteBytes(bytes.Slice(offset + 1, 4), checked((int)(jumpTarget - (body + RuntimeLayout.JumpSize))));
        return new BodyPatch(body, qword, original, BitConverter.ToInt64(bytes));
    }

    /// <summary>
    /// Lets threads that were already entering the bodies finish their first instructions. A running thread
    /// needs nanoseconds; a thread the OS preempted right there needs to be scheduled again, so the wait
    /// spans a few scheduler periods and gives up the CPU (nanosleep, not Thread.Sleep, which may be the
    /// very method being detoured).
    /// </summary>
    private static unsafe void Quiesce(long nanoseconds)
    {
        long* request = stackalloc long[2];
        request[0] = nanoseconds / 1_000_000_000;
        request[1] = nanoseconds % 1_000_000_000;
        _ = Libc.NanoSleep(request, null);
    }

    private Delegate BuildOriginal(Type delegateType)
    {
        Type[] parameters = replacement.GetParameters().Select(p => p.ParameterType).ToArray();
        Type returnType = replacement.ReturnType;
        MethodInfo invoke = delegateType.GetMethod("Invoke")
            ?? throw new ArgumentException($"{delegateType} is not a delegate type.", nameof(delegateType));
        Type[] invokeParameters = invoke.GetParameters().Select(p => p.ParameterType).ToArray();
        if (invoke.ReturnType != returnType || !invokeParameters.SequenceEqual(parameters))
        {
            throw new ArgumentException(
                $"The delegate type {delegateType.Name} does not match the replacement {TargetRules.Describe(replacement)}: " +
                $"expected {returnType.Name} ({string.Join(", ", parameters.Select(t => t.Name))}).");
        }

        // A managed-convention calli to the trampoline: `this` (if any) first, exactly like the replacement.
        var method = new DynamicMethod("Original_" + Target.Name, returnType, parameters, typeof(Detour).Module, skipVisibility: true);
        ILGenerator il = method.GetILGenerator();
        for (int i = 0; i < parameters.Length; i++)
        {
            il.Emit(OpCodes.Ldarg, (short)i);
        }

        il.Emit(OpCodes.Ldc_I8, (long)trampoline);
        il.Emit(OpCodes.Conv_I);
        il.EmitCalli(OpCodes.Calli, CallingConventions.Standard, returnType, parameters, null);
        il.Emit(OpCodes.Ret);
        return method.CreateDelegate(delegateType);
    }

    [Conditional("DEBUG")]
    private static void AssertRegistryLocked()
    {
        Debug.Assert(Gate.IsHeldByCurrentThread, "The detour registry may only change under the engine lock.");
        foreach ((nint md, Detour d) in Active)
        {
            Debug.Assert(d.applied && d.methodDesc == md, "Every registered detour must be applied and keyed by its own MethodDesc.");
            Debug.Assert(JitGuard.Contains(md), "Every detoured method must be in the JIT guard table before its body is patched.");
        }
    }
}
