namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>
    /// The most carrier threads this hub may use at once: <see cref="HubOptions.MaxCarriers"/> when set, otherwise the
    /// machine's limit (pid_max, threads-max, the cgroup's pids.max, vm.max_map_count, memory). Every suspended stackful
    /// greenlet keeps one carrier, so this bounds how many can be suspended at once (a server sizes its connection limit
    /// from it).
    /// </summary>
    public int CarrierCapacity => MaxCarriers;
}
