"""``python -m fuzz [--seed N] [--frames N] [--minutes M] [--workers N] [--replay FILE]``.

Prints the report as one JSON object on stdout (progress on stderr); exits 1 when a check
failed, after writing the recent cases to a failure file that ``--replay`` sends again.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._run import fuzz, replay


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer from the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames to send")
    parser.add_argument("--minutes", type=float, default=10.0, help="stop after this long")
    parser.add_argument("--workers", type=int, default=4, help="attacker tasks at once")
    parser.add_argument("--replay", metavar="FILE", help="replay a failure file")
    args = parser.parse_args(argv)
    if args.replay:
        report = replay(args.replay)
    else:
        report = fuzz(args.seed, args.frames, args.minutes, args.workers)
    print(json.dumps(report.to_json(), indent=1))
    for failure in report.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if report.failure_file:
        path = report.failure_file
        print(f"recent cases saved to {path} (replay: python -m fuzz --replay {path})",
              file=sys.stderr)  # fmt: skip
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
