"""What the benchmark scripts measure besides wall time: peak memory and other jobs' CPU load."""

from __future__ import annotations

import os
import resource
import time

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mib() -> float:
    """This process's peak resident memory (ru_maxrss) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, this process's CPU s, the machine's busy CPU s): tells other jobs' load apart."""
    with open("/proc/stat") as handle:
        values = [int(x) for x in handle.readline().split()[1:]]
    busy = (values[0] + values[1] + values[2] + values[5] + values[6]) / _CLOCK_TICKS
    times = os.times()
    return time.perf_counter(), times.user + times.system, busy


def contended(start, stop) -> bool:
    """True when other processes took a noticeable share of the CPU between two snapshots."""
    wall = stop[0] - start[0]
    other = max(0.0, (stop[2] - start[2]) - (stop[1] - start[1]))
    return other > max(0.05 * wall * os.cpu_count(), 0.1)
