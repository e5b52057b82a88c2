using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Works around a hazard of the detour engine's entry walk (reported to the engine's owner): a small method
/// whose JIT-compiled body is nothing but a tail call, <c>mov rax, imm64; jmp rax</c>, looks exactly like
/// the runtime's far-jump stub, so the walk steps over it into the <em>callee's</em> body and the detour
/// lands there, redirecting every caller of the callee with the wrong arguments. Observed on .NET 10.0 with
/// <c>WaitHandle.WaitOne(TimeSpan)</c>: Dictionary code crashed into its replacement.
/// </summary>
/// <para>Second hazard of the same walk: a fixup precode of a method without code points to its own second
/// half, which matches the StubPrecode pattern and leads to the shared fixup thunk. Also refused here.</para>
/// <remarks>Before a target is detoured, this walks its entry through the stubs the engine knows (fixup and
/// stub precodes, call-counting stubs) and refuses it if the walk meets that pattern. Genuine runtime jump
/// stubs are refused as well, which is the safe side: the method is then reported, not patched.</remarks>
internal static unsafe class TailCallGuard
{
    private const int MaxHops = 8;

    /// <summary>Null if the target's code can be told apart from a tail call; otherwise the refusal reason.</summary>
    public static string? Check(MethodBase target)
    {
        RuntimeHelpers.PrepareMethod(target.MethodHandle);
        nint p = target.MethodHandle.GetFunctionPointer();
        for (int hop = 0; hop < MaxHops; hop++)
        {
            if (!CodeMemory.IsReadable(p, 24)) return null; // let the engine report what it makes of it
            byte* b = (byte*)p;
            if (b[0] == 0x48 && b[1] == 0xB8 && b[10] == 0xFF && b[11] == 0xE0)
            {
                return "Refused before detouring: its compiled code is (or is reached through) `mov rax, imm64; jmp rax`, which is either a runtime jump stub or the whole body of a method that only tail-calls another one; the detour engine cannot tell them apart and could patch the callee instead. Its callers are not cooperative unless the callee is patched.";
            }
            nint next = 0;
            if (b[0] == 0xFF && b[1] == 0x25 && b[6] == 0x4C && b[7] == 0x8B && b[8] == 0x15 && b[13] == 0xFF && b[14] == 0x25)
                next = *(nint*)(p + 6 + *(int*)(p + 2)); // FixupPrecode
            else if (b[0] == 0x4C && b[1] == 0x8B && b[2] == 0x15 && b[7] == 0xFF && b[8] == 0x25)
                next = *(nint*)(p + 13 + *(int*)(p + 9)); // StubPrecode
            else if (b[0] == 0x48 && b[1] == 0x8B && b[2] == 0x05 && b[7] == 0x66 && b[8] == 0xFF && b[9] == 0x08 && b[10] == 0x74 && b[11] == 0x06 && b[12] == 0xFF && b[13] == 0x25)
                next = *(nint*)(p + 18 + *(int*)(p + 14)); // call-counting stub
            if (next == 0) return null; // the body
            if (b[0] == 0xFF && next == p + 6)
            {
                // A fixup precode whose target is its own second half: the method has no code yet. The bytes there
                // look like a StubPrecode, and walking on would reach the runtime's shared fixup thunk.
                return "Refused before detouring: the method still has no compiled code after PrepareMethod (its precode points to the runtime's shared fixup stub, which the detour engine's walk would patch instead). Its callers are not cooperative.";
            }
            p = next;
        }
        return null;
    }
}
