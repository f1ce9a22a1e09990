"""``python -m torture [--seed S] [--schedules N] [--minutes M]``: a seeded fault sweep.

Runs schedules ``S, S+1, ...`` until `N` ran or `M` minutes passed, prints a summary, shrinks
the first failing seed of each distinct failure to a short script and prints it (``--out DIR``
also writes each one there), and with ``--record`` appends the result to torture/RESULTS.md.
The exit status is 1 when any schedule broke a property.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import time
from pathlib import Path

from . import generate, run, script, shrink
from ._run import Outcome

_RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def signature(outcome: Outcome) -> str:
    """A failure's kind and first detail with the numbers and node names taken out."""
    first = outcome.violations[0]
    detail = re.sub(r"\b[a-h]\b", "X", re.sub(r"\d+(\.\d+)?", "N", first.detail))
    return f"{first.kind}: {detail[:120]}"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep the arguments describe; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m torture", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--schedules", type=int, default=1000, help="how many (default 1000)")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-clock bound (default 9)")
    parser.add_argument(
        "--sqlite-every", type=int, default=20,
        help="one schedule in this many uses SqliteStorage (0: never; default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--shrink", type=int, default=4, help="distinct failures to shrink and print (default 4)"
    )
    parser.add_argument(
        "--shrink-minutes", type=float, default=1.5,
        help="wall-clock bound of all the shrinking, after the sweep (default 1.5)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write each repro script into this folder")
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.minutes * 60
    ran = 0
    failures: dict[str, list[Outcome]] = {}
    kinds: dict[str, int] = {}
    totals: dict[str, int] = {}
    for seed in range(args.seed, args.seed + args.schedules):
        if time.monotonic() > deadline:
            break
        outcome = run(*generate(seed, sqlite_every=args.sqlite_every))
        ran += 1
        for key, value in outcome.counts.items():
            totals[key] = totals.get(key, 0) + value
        if not outcome.ok:
            failures.setdefault(signature(outcome), []).append(outcome)
            for kind in outcome.kinds:
                kinds[kind] = kinds.get(kind, 0) + 1
        if ran % 500 == 0:
            failed = sum(map(len, failures.values()))
            print(f"... {ran} schedules, {failed} failing, {time.monotonic() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
    elapsed = time.monotonic() - started
    failed = sum(map(len, failures.values()))
    last = args.seed + ran - 1
    print(f"torture: seeds {args.seed}..{last}: {ran} schedules in {elapsed:.0f} s, "
          f"{failed} with violations, {kinds.get('crash', 0)} with crashes")  # fmt: skip
    print("  totals: " + ", ".join(f"{key} {value}" for key, value in totals.items()))
    for kind, count in sorted(kinds.items()):
        print(f"  {kind}: {count} schedules")
    for sig, outcomes in sorted(failures.items(), key=lambda item: -len(item[1])):
        seeds = ", ".join(str(o.config.seed) for o in outcomes[:8])
        more = f" (+{len(outcomes) - 8})" if len(outcomes) > 8 else ""
        print(f"  {len(outcomes):4d} x {sig}  seeds {seeds}{more}")
    if args.record:
        _record(args, ran, elapsed, failed, kinds, failures, totals)
    chosen = sorted(failures.items(), key=lambda item: -len(item[1]))[: args.shrink]
    shrink_deadline = time.monotonic() + args.shrink_minutes * 60
    for index, (sig, outcomes) in enumerate(chosen):
        first = min(outcomes, key=lambda o: len(o.steps))
        budget = (shrink_deadline - time.monotonic()) / (len(chosen) - index)
        small = shrink(first, budget=max(budget, 0.0)) if budget > 0 else first
        text = script(small, original=len(first.steps))
        print(f"\n# --- {sig}\n{text}", flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"seed{first.config.seed}.py").write_text(text)
    return 1 if failed else 0


def _record(
    args: argparse.Namespace,
    ran: int,
    elapsed: float,
    failed: int,
    kinds: dict[str, int],
    failures: dict[str, list[Outcome]],
    totals: dict[str, int],
) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## {when}, commit {commit or '?'}\n",
        f"Seeds {args.seed}..{args.seed + ran - 1} ({ran} schedules, "
        f"SQLite every {args.sqlite_every}), {elapsed:.0f} s wall: **{failed} with violations, "
        f"{kinds.get('crash', 0)} with crashes**.\n",
        "Totals: " + ", ".join(f"{key} {value}" for key, value in totals.items()) + ".\n",
    ]
    if failures:
        lines.append("\n| schedules | first violation | seeds |\n|---|---|---|\n")
        for sig, outcomes in sorted(failures.items(), key=lambda item: -len(item[1])):
            seeds = ", ".join(str(o.config.seed) for o in outcomes[:5])
            lines.append(f"| {len(outcomes)} | {sig.replace('|', '/')} | {seeds} |\n")
    with _RESULTS.open("a") as out:
        out.write("".join(lines))  # one write: concurrent sweeps append whole sections


if __name__ == "__main__":
    raise SystemExit(main())
