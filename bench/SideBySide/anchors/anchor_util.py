# Helpers shared by the gevent anchor programs of bench/SideBySide: each program prints exactly one JSON line.
import json


def emit(**fields):
    """Prints the result of one run as one JSON line (the harness reads the last line of stdout)."""
    print(json.dumps(fields), flush=True)


def percentile(sorted_values, fraction):
    """The value below which `fraction` of the sorted sample lies (nearest rank, no interpolation)."""
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def rss_kib():
    """The resident set size of this process now, in KiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
