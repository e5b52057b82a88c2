namespace GreenRuntime.Detours;

/// <summary>
/// Finds the native body a method currently runs, by walking the runtime's entry stubs from its stable
/// entry point.
/// </summary>
/// <remarks>
/// The stable entry point (<c>RuntimeMethodHandle.GetFunctionPointer</c>) is a precode. Between it and the
/// body there may be a FixupPrecode, a StubPrecode, a call-counting stub (tiering) and a runtime jump stub
/// (<c>mov rax, imm64; jmp rax</c>). These are recognised by their exact instruction shapes; everything else
/// is the body. A body that itself starts with <c>E9 rel32</c> or a bare <c>jmp [rip+x]</c> was patched by
/// somebody (the JIT never emits a body that starts with an unconditional jump): it is reported as
/// <see cref="Body.StartsWithJump"/> so the caller can refuse it or recognise it as its own.
/// A method that has no code yet is recognised at its FixupPrecode, whose cell then points back into the precode
/// itself (entry + 6, the half that calls the runtime's fixup thunk to compile the method): the walk stops there
/// and reports <see cref="Body.HasNoCode"/> instead of walking into the thunk and taking it for the body.
/// </remarks>
internal static unsafe class CodeLocator
{
    private const int MaxHops = 8;

    /// <summary>The result of a walk.</summary>
    /// <param name="Address">The body.</param>
    /// <param name="StartsWithJump">The body starts with an unconditional jump (someone patched it).</param>
    /// <param name="JumpTarget">Where that jump goes.</param>
    /// <param name="Cell">
    /// The runtime data cell the last stub read the body's address from (0 if it came from an immediate).
    /// </param>
    /// <param name="HasNoCode">
    /// The method has no code yet: <paramref name="Address"/> is its FixupPrecode, not a body.
    /// </param>
    internal readonly record struct Body(nint Address, bool StartsWithJump, nint JumpTarget, nint Cell, bool HasNoCode = false);

    /// <summary>Where, in a FixupPrecode, the half that calls the fixup thunk starts (<c>mov r10, [rip+Y]</c>).</summary>
    private const int FixupPrecodeThunkCallOffset = 6;

    public static Body FindBody(nint entry)
    {
        nint p = entry;
        nint cell = 0;
        for (int hop = 0; hop < MaxHops; hop++)
        {
            if (!CodeMemory.IsReadable(p, 24))
            {
                throw new InvalidOperationException(
                    $"Internal error: the entry stub walk reached unmapped address 0x{p:x}; the precode layout " +
                    "differs from the one verified for this runtime.");
            }

            nint nextCell = NextHopCell(p, out bool immediate);
            if (IsFixupPrecode(p) && *(nint*)nextCell == p + FixupPrecodeThunkCallOffset)
            {
                return new Body(p, false, 0, nextCell, HasNoCode: true);
            }

            if (nextCell == 0 && !immediate)
            {
                nint jumpTarget = ForeignJumpTarget(p);
                return new Body(p, jumpTarget != 0, jumpTarget, cell);
            }

            cell = nextCell;
            p = immediate ? *(nint*)(p + 2) : *(nint*)nextCell;
        }

        throw new InvalidOperationException(
            $"Internal error: more than {MaxHops} entry stubs in front of the body that starts at 0x{entry:x}.");
    }

    /// <summary>
    /// If a recognised runtime stub is at <paramref name="p"/>, returns the address of the data cell it
    /// jumps through (or sets <paramref name="immediate"/> for the jump stub whose target is an immediate);
    /// otherwise returns 0.
    /// </summary>
    private static nint NextHopCell(nint p, out bool immediate)
    {
        byte* b = (byte*)p;
        immediate = false;

        // FixupPrecode: jmp [rip+X]; mov r10, [rip+Y]; jmp [rip+Z]. The first jump's cell is the target.
        if (IsFixupPrecode(p))
        {
            return p + 6 + *(int*)(p + 2);
        }

        // StubPrecode: mov r10, [rip+X]; jmp [rip+Y].
        if (b[0] == 0x4C && b[1] == 0x8B && b[2] == 0x15 && b[7] == 0xFF && b[8] == 0x25)
        {
            return p + 13 + *(int*)(p + 9);
        }

        // Call-counting stub: mov rax, [rip+X]; dec word [rax]; je +6; jmp [rip+Y] (code); jmp [rip+Z] (completion).
        if (b[0] == 0x48 && b[1] == 0x8B && b[2] == 0x05 && b[7] == 0x66 && b[8] == 0xFF && b[9] == 0x08
            && b[10] == 0x74 && b[11] == 0x06 && b[12] == 0xFF && b[13] == 0x25)
        {
            return p + 18 + *(int*)(p + 14);
        }

        // Runtime jump stub: mov rax, imm64; jmp rax.
        if (b[0] == 0x48 && b[1] == 0xB8 && b[10] == 0xFF && b[11] == 0xE0)
        {
            immediate = true;
        }

        return 0;
    }

    private static bool IsFixupPrecode(nint p)
    {
        byte* b = (byte*)p;
        return b[0] == 0xFF && b[1] == 0x25 && b[6] == 0x4C && b[7] == 0x8B && b[8] == 0x15 && b[13] == 0xFF && b[14] == 0x25;
    }

    /// <summary>If the body starts with an unconditional jump, returns its destination; otherwise 0.</summary>
    public static nint ForeignJumpTarget(nint body)
    {
        byte* b = (byte*)body;
        if (b[0] == 0xE9)
        {
            return body + 5 + *(int*)(body + 1);
        }

        if (b[0] == 0xFF && b[1] == 0x25)
        {
            return *(nint*)(body + 6 + *(int*)(body + 2));
        }

        if (b[0] == 0x49 && (b[1] == 0xBA || b[1] == 0xBB) && b[10] == 0x41 && b[11] == 0xFF)
        {
            return *(nint*)(body + 2);
        }

        return 0;
    }
}
