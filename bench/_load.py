"""Who else used the CPUs: a benchmark on a shared 2-vCPU machine must say so.

`/proc/stat` gives the machine's busy and steal time; the benchmark's own CPU time is this
process plus its children (live ones read from `/proc/<pid>/stat`, killed ones accumulated by
`bench._proc` just before the kill). The difference is *foreign* load: other processes
(a test run, an editor...) competing for the two cores. Loopback networking done in softirq
context is not charged to any process, so a few percent of "foreign" load is our own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import _proc
from ._util import now

_TICK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def _machine() -> tuple[float, float]:
    """(busy seconds, steal seconds) summed over all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0, 0.0
    values = [int(v) for v in fields]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy / _TICK, steal / _TICK


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid`, or 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    """CPU seconds used by the benchmark: this process and every child, live or killed."""
    times = os.times()
    live = sum(process_cpu(pid) for pid in _proc.live_pids())
    return times.user + times.system + live + _proc.reaped_cpu()


@dataclass
class Sample:
    t: float
    busy: float
    steal: float
    own: float


def sample() -> Sample:
    busy, steal = _machine()
    return Sample(now(), busy, steal, own_cpu())


@dataclass
class Load:
    """Average load over an interval, in CPUs (2.0 = both cores fully busy)."""

    seconds: float
    own: float
    foreign: float
    steal: float

    def to_json(self) -> dict[str, float]:
        return {
            "own_cpus": round(self.own, 2),
            "foreign_cpus": round(self.foreign, 2),
            "steal_cpus": round(self.steal, 2),
        }


def between(a: Sample, b: Sample) -> Load:
    dt = max(b.t - a.t, 1e-9)
    own = (b.own - a.own) / dt
    busy = (b.busy - a.busy) / dt
    return Load(dt, own, max(0.0, busy - own), (b.steal - a.steal) / dt)
