System.Console.WriteLine("GreenRuntime demo");
