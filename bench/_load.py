"""Who else used the CPUs: a benchmark on a shared 2-vCPU machine must say so.

`/proc/stat` gives the machine's busy and steal time; the benchmark's own CPU time is this
process plus its children (live ones read from `/proc/<pid>/stat`, killed ones accumulated by
`bench._proc` just before the kill). The difference is *foreign* load: other processes
(a test run, an editor...) competing for the two cores. Loopback networking done in softirq
context is not charged to any process, so a few percent of "foreign" load is our own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from . import _proc
from ._util import Figure, log, now, spin

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
            "step_own_cpus": round(self.own, 2),
            "step_foreign_cpus": round(self.foreign, 2),
            "step_steal_cpus": round(self.steal, 2),
        }


def between(a: Sample, b: Sample) -> Load:
    dt = max(b.t - a.t, 1e-9)
    own = (b.own - a.own) / dt
    busy = (b.busy - a.busy) / dt
    return Load(dt, own, max(0.0, busy - own), (b.steal - a.steal) / dt)


#: Other processes using this many CPUs (of 2) during a repetition make it suspect.
BUSY = 0.15
#: Suspect repetitions measured again, at most this many per figure.
RETRIES = 3
#: Repetitions shorter than this are not judged (the kernel counts CPU time in 10 ms ticks).
MIN_WINDOW = 0.25
#: Seconds this run may still spend waiting for other processes to go quiet (set by main).
budget = [0.0]


async def wait_quiet(max_wait: float) -> float:
    """Wait until other processes use < `BUSY` CPUs (checked over 0.5 s), for at most
    `max_wait` s and at most the run's remaining `budget`; return their last load."""
    deadline = now() + min(max_wait, budget[0])
    while True:
        start = sample()
        await trio.sleep(0.5)
        load = between(start, sample())
        if load.foreign < BUSY or now() >= deadline:
            return load.foreign
        budget[0] = max(0.0, budget[0] - load.seconds)
        log(f"other processes use {load.foreign:.2f} CPUs; waiting for a quiet machine")


async def repetitions(fig: Figure, n: int, retries: int = RETRIES) -> AsyncIterator[int]:
    """Yield `n` repetition indexes; the loop body adds one sample to `fig` each time.

    The foreign load during each repetition is recorded as its ``foreign_cpus`` side value.
    A repetition during which other processes used >= `BUSY` CPUs is dropped and, after
    waiting a little for quiet, measured again: at most `retries` times per figure
    (``busy_reps_redone`` counts them).
    """
    done = 0
    redone = 0
    while done < n:
        before = len(fig.samples)
        start = sample()
        yield done
        load = between(start, sample())
        if len(fig.samples) == before or load.seconds < MIN_WINDOW:
            done += 1
            continue
        if load.foreign >= BUSY and redone < retries:
            fig.drop_last()
            redone += 1
            fig.extra["busy_reps_redone"] = redone
            log(f"repetition disturbed (other processes used {load.foreign:.2f} CPUs); redoing")
            if budget[0] > 0:
                await wait_quiet(5.0)
                spin(0.3)
            continue
        fig.per_rep[-1]["foreign_cpus"] = round(load.foreign, 2)
        done += 1
