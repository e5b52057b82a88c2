// GreenRuntime.Servers: StreamServer (a greenlet per TCP connection) and HttpServer (HTTP/1.1 on top of it). They
// stand on the core's public API only; the socket I/O is the core's one cooperative layer
// (GreenRuntime.LowLevel.CooperativeSocket), the same one the patched Socket methods use.
global using GreenRuntime.LowLevel;
