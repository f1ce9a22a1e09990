"""The README's example runs and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs() -> None:
    text = README.read_text()
    first_block = text.split("```")[1]
    assert first_block.split()[:2] == ["make", "demo"], "the README opens with make demo"
    assert "make test" in first_block
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "('beta',) hello" in out
    assert "BECOMES_MASTER - Force master completed" in out
