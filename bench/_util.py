"""Small helpers shared by the parent and the children: clocks, CPU warm-up, statistics.

Every timestamp that crosses a process boundary is `time.perf_counter()`: on Linux it reads
CLOCK_MONOTONIC, which is system-wide, so a child's t0 and the parent's t1 can be subtracted.
(trio's own clock adds a random per-run offset and must not be compared across processes.)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

now = time.perf_counter


def log(*parts: object) -> None:
    """Progress goes to stderr; stdout carries only the JSON result."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def spin(seconds: float) -> int:
    """Keep this core busy for `seconds` (the VM runs slow for a while after idling)."""
    end = now() + seconds
    n = 0
    while now() < end:
        n += 1
    return n


def spin_until(deadline: float) -> None:
    """Busy-wait until `deadline` (a `now()` value)."""
    while now() < deadline:
        pass


def ref_cpu(seconds: float = 0.1) -> float:
    """A fixed pure-Python dict loop, in ops/s (about 5 M/s on a warm core of this VM kind).

    Recorded beside each scenario so that runs on a slow moment can be recognised.
    """
    d: dict[int, int] = {}
    ops = 0
    end = now() + seconds
    start = now()
    while now() < end:
        for i in range(1000):
            d[i & 255] = i
        ops += 1000
    return ops / (now() - start)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_us(latencies: list[float]) -> dict[str, float]:
    """``p50_us`` and ``p99_us`` of per-operation latencies in seconds (sorts them in place),
    as side values for `Figure.add`."""
    latencies.sort()
    return {
        "p50_us": percentile(latencies, 0.5) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
    }


@dataclass
class Figure:
    """One measured quantity over n repetitions; `median` is what is quoted.

    Each repetition adds its value and, optionally, named side values (latency
    percentiles...), reported as their median over the repetitions. `extra` holds facts
    about the figure as a whole.
    """

    unit: str
    samples: list[float] = field(default_factory=list)
    per_rep: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, value: float, **side: float) -> None:
        self.samples.append(value)
        self.per_rep.append(side)

    def drop_last(self) -> None:
        self.samples.pop()
        self.per_rep.pop()

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def side(self, key: str) -> float:
        """The median over repetitions of a side value (nan if none recorded it)."""
        return median_of([rep[key] for rep in self.per_rep if key in rep])

    def side_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for rep in self.per_rep:
            keys.update(dict.fromkeys(rep))
        return list(keys)

    def get(self, key: str) -> Any:
        """A side value's median, else a figure-wide extra, else None."""
        if key in self.side_keys():
            return self.side(key)
        return self.extra.get(key)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "median": _round(self.median),
            "min": _round(min(self.samples)) if self.samples else None,
            "max": _round(max(self.samples)) if self.samples else None,
            "n": len(self.samples),
            "unit": self.unit,
            "samples": [_round(s) for s in self.samples],
        }
        for key in self.side_keys():
            out[key] = _round(self.side(key))
        out.update(self.extra)
        return out


def _round(value: Any) -> Any:
    """Round a float for the report; nan (nothing measured) becomes None (JSON null)."""
    if not isinstance(value, float):
        return value
    if value != value:
        return None
    if value in (float("inf"), float("-inf")):
        return value
    if abs(value) >= 100:
        return round(value, 1)
    return float(f"{value:.4g}")


def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
