namespace GreenRuntime.Tests;
