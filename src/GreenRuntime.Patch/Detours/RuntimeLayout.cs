using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Every runtime-specific constant the detour engine relies on, in one place, behind one version gate.
/// </summary>
/// <remarks>
/// These numbers were read from the CoreCLR sources of .NET 10 and measured on 10.0.12 linux-x64
/// (see docs/detours.md, "Verifying a new .NET version"). Nothing outside this file may hard-code a
/// runtime layout fact. <see cref="Check"/> must pass before any of them is used to read or write memory;
/// the self-test then exercises all of them on a private dummy method.
/// </remarks>
internal static class RuntimeLayout
{
    /// <summary>The only runtime major version whose layout has been verified.</summary>
    public const int SupportedMajor = 10;

    /// <summary>ICorJitCompiler::getVersionIdentifier of the .NET 10 JIT (JITEEVersionIdentifier).</summary>
    public static readonly Guid JitVersionIdentifier = new("7a8cbc56-9e19-4321-80b9-a0d2c578c945");

    /// <summary>ICorJitCompiler vtable slot of compileMethod.</summary>
    public const int CompileMethodSlot = 0;

    /// <summary>ICorJitCompiler vtable slot of getVersionIdentifier.</summary>
    public const int GetVersionIdentifierSlot = 2;

    /// <summary>CorJitResult.CORJIT_BADCODE: the tiering manager keeps the old code when it sees it.</summary>
    public const uint CorJitBadCode = 0x80000001;

    /// <summary>Offset of CORINFO_METHOD_INFO.ftn (the MethodDesc being compiled).</summary>
    public const int MethodInfoFtnOffset = 0;

    /// <summary>Offset of the 32-bit word holding MethodDesc::m_wFlags in its upper half (the u16 at +6).</summary>
    public const int MethodDescFlagsWordOffset = 4;

    /// <summary>mdcNotInline (0x2000) of m_wFlags, seen through the 32-bit word at +4.</summary>
    public const uint NotInlineMask = 0x2000u << 16;

    /// <summary>mdcIsIntrinsic (0x8000) of m_wFlags, seen through the 32-bit word at +4.</summary>
    public const uint IntrinsicMask = 0x8000u << 16;

    /// <summary>The JIT library's file name inside the runtime directory.</summary>
    public const string JitLibraryName = "libclrjit.so";

    /// <summary>Size of the jump written over the start of a body: E9 rel32.</summary>
    public const int JumpSize = 5;

    /// <summary>
    /// Throws <see cref="PlatformNotSupportedException"/> unless this process runs the runtime, OS and
    /// architecture whose layout this file describes. The JIT GUID is checked separately by the JIT guard
    /// because it needs the JIT loaded.
    /// </summary>
    public static void Check()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException(
                $"GreenRuntime detours support Linux only; this process runs on {RuntimeInformation.OSDescription}.");
        }

        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            throw new PlatformNotSupportedException(
                $"GreenRuntime detours support x64 only; this process is {RuntimeInformation.ProcessArchitecture}.");
        }

        if (RuntimeInformation.FrameworkDescription.StartsWith(".NET", StringComparison.Ordinal) is false
            || Environment.Version.Major != SupportedMajor)
        {
            throw new PlatformNotSupportedException(
                $"GreenRuntime detours are verified on .NET {SupportedMajor} only; this process runs " +
                $"{RuntimeInformation.FrameworkDescription} ({Environment.Version}). See docs/detours.md for the " +
                "checklist to verify a new version.");
        }

        if (Type.GetType("Mono.Runtime") is not null)
        {
            throw new PlatformNotSupportedException("GreenRuntime detours need CoreCLR; this process runs Mono.");
        }
    }
}
