namespace DetourJitProbe.Missing;

/// <summary>A type whose assembly will not be there when the probe runs.</summary>
public sealed class MissingType
{
    public int Touch() => 42;
}
