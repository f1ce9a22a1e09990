"""A deterministic fault runner for hakit (``make torture``; issue 8).

Seeded schedules run on `hakit.open_cluster` under trio's `MockClock`: concurrent sync and
async commits, partitions, heals, holds and latency on the simulated network, replica stops
and cancels, master-side detaches, force master, and operator re-promotion of former masters
(`stop_master` / `set_master_params`). When the faults end, every node is brought back to one
master and a checker looks for (a) an acknowledged write lost on the final master, (b) two
writers or two masters in one generation, (c) a replica that caught up but holds other
contents, (d) a node that crashed, (e) an error outside the documented contract (hakit's
error hierarchy and `StopReason`), and liveness failures once the network is whole again.

A run is reproducible: the simulated network and trio's scheduler are both seeded, and time
is virtual. A failing seed is shrunk and printed as a short script (see `script`).

This package is a test tool beside ``bench/``, not part of hakit's public API.
"""

from __future__ import annotations

from ._run import Outcome, Violation, run
from ._schedule import Config, Step, generate
from ._shrink import script, shrink

__all__ = [
    "Config",
    "Outcome",
    "Step",
    "Violation",
    "generate",
    "replay",
    "run",
    "script",
    "shrink",
]


def replay(config: Config, steps: list[Step]) -> int:
    """Run one schedule (a repro script calls this); print what broke; return 1 if anything."""
    outcome = run(config, steps)
    for violation in outcome.violations:
        print(violation)
    if outcome.ok:
        print(f"seed {config.seed}: no violation ({len(steps)} steps, {outcome.counts})")
    return 0 if outcome.ok else 1
