namespace GreenRuntime.Patch.Tests;
