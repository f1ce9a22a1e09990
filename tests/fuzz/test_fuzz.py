"""The frame fuzzer, as CI runs it: 20,000 frames against a master process over real TCP.

`make fuzz` runs the full goal (1,000,000 frames, or 10 minutes); this is the same run, shorter,
with a fixed seed. It checks what the fuzzer checks: no crash, no step-down, the healthy replica
never detached, no acknowledged write lost, the writer never failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_twenty_thousand_frames_change_nothing_for_the_healthy_peers() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fuzz", "--seed", "1", "--frames", "20000", "--minutes", "3",
         "--workers", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-6000:]
    report = json.loads(run.stdout)
    assert report["ok"] and not report["failures"]
    assert report["frames"] >= 20_000
    assert report["hostile_frames"] > 2_000
    assert report["writes_acked"] > 0 and report["writer_errors"] == []


def test_a_failure_file_replays(tmp_path: Path) -> None:
    """A saved case is sent again and checked after (here a harmless one: the checks hold)."""
    from fuzz._frames import Case, framed

    case = Case(7, "frames", "none", [framed(b"\xc1")], "close")
    failure = tmp_path / "failure.json"
    failure.write_text(json.dumps({"seed": 1, "failures": [], "cases": [case.to_json()]}))
    run = subprocess.run(
        [sys.executable, "-m", "fuzz", "--replay", str(failure)],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert json.loads(run.stdout)["cases"] == 1
