// GreenRuntime.Patch: the detour engine (Detours/) and the patch sets (PatchSets/) behind Patch.All().
