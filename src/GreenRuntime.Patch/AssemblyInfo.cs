// GreenRuntime.Patch: the detour engine (Detours/) and the patch sets (PatchSets/) behind Patch.All().

// The patch sets stand on the core's declared extension API only (no InternalsVisibleTo): parking, the
// cooperative socket layer and the I/O buffer pool.
global using GreenRuntime.LowLevel;
