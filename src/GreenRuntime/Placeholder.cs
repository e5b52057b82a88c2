namespace GreenRuntime;
