"""Shrink a failing schedule to a short one that fails the same way, and print it as a script."""

from __future__ import annotations

import time

from ._run import Outcome, run
from ._schedule import Config, Step


def shrink(outcome: Outcome, *, budget: float = 60.0, max_runs: int = 300) -> Outcome:
    """Return the shortest failing variant of `outcome`'s schedule found within the budget.

    A variant counts as failing the same way when it breaks a property of the same kind as
    the first violation of the original. Delta debugging over the steps (drop chunks, halving
    their size down to single steps), then every delay set to zero where that still fails.

    Args:
        outcome: a failing outcome.
        budget: wall-clock seconds to spend.
        max_runs: schedules to try at most.
    """
    assert outcome.violations, "only a failing outcome can be shrunk"
    kind = outcome.violations[0].kind
    config = outcome.config
    best = outcome
    started = time.monotonic()
    runs = 0

    def fails(steps: list[Step]) -> Outcome | None:
        nonlocal runs
        runs += 1
        candidate = run(config, steps)
        return candidate if kind in candidate.kinds else None

    def out_of_budget() -> bool:
        return runs >= max_runs or time.monotonic() - started > budget

    chunk = max(1, len(best.steps) // 2)
    while chunk >= 1 and not out_of_budget():
        start = 0
        while start < len(best.steps) and not out_of_budget():
            steps = best.steps[:start] + best.steps[start + chunk :]
            found = fails(steps) if steps != best.steps else None
            if found is not None:
                best = found  # retry the same position: the next chunk moved into it
            else:
                start += chunk
        chunk //= 2
    for index in range(len(best.steps)):
        if out_of_budget():
            break
        step = best.steps[index]
        if step[-1] == 0:
            continue
        steps = [*best.steps[:index], (*step[:-1], 0.0), *best.steps[index + 1 :]]
        found = fails(steps)
        if found is not None:
            best = found
    return best


def script(outcome: Outcome, *, original: int | None = None) -> str:
    """The schedule of `outcome` as a short Python script that replays it and prints why."""
    config: Config = outcome.config
    lines = [f'"""torture seed {config.seed}']
    if original is not None:
        lines[0] += f" (shrunk from {original} to {len(outcome.steps)} steps)"
    lines[0] += ":"
    lines.extend(f"  {violation}" for violation in outcome.violations)
    lines.append("Run from the repository root: .venv/bin/python <this file>")
    lines.append('"""')
    lines.append("import torture")
    lines.append("")
    args = ", ".join(f"{k}={v!r}" for k, v in config.as_dict().items())
    lines.append(f"config = torture.Config({args})")
    lines.append("steps = [")
    lines.extend(f"    {step!r}," for step in outcome.steps)
    lines.append("]")
    lines.append("raise SystemExit(torture.replay(config, steps))")
    return "\n".join(lines) + "\n"
