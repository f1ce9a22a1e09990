"""`python -m bench --quick` runs end to end (its figures are not judged here: speed goals
live in the benchmark's own report, never in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_runs_and_reports_every_goal(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-record", "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["errors"] == {}
    goals = {row["goal"]: row for row in report["goals"]}
    assert len(goals) == 14
    for row in goals.values():
        assert row["measured"] > 0
        assert row["ceiling"] > 0
    assert not results.exists()
