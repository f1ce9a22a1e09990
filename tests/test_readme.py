"""The README's examples run as written, print what they say, and type-check strictly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_readme_opens_with_make_demo() -> None:
    first_block = README.read_text().split("```")[1]
    assert first_block.split()[:2] == ["make", "demo"], "the README opens with make demo"
    assert "make test" in first_block


def test_readme_example_runs() -> None:
    out = run(python_blocks()[0])
    assert "('beta',) hello" in out
    assert "BECOMES_MASTER - Force master completed" in out


def test_readme_channel_snippet_runs_as_written() -> None:
    (channels,) = [block for block in python_blocks() if "EID_MASTER" in block]
    assert "[b'pong:', b'ping']" in run(channels)


def test_readme_examples_have_no_settle_sleeps() -> None:
    for block in python_blocks():
        assert "trio.sleep(" not in block


def test_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    examples = []
    for index, block in enumerate(python_blocks()):
        examples.append(tmp_path / f"example{index}.py")
        if "hakit.jupyter" in block:
            # A notebook cell: IPython runs top-level await, which plain Python does not.
            block = '# mypy: disable-error-code="top-level-await"\n' + block
        examples[-1].write_text(block)
    result = subprocess.run(
        # The project's own configuration, for its msgpack override (msgpack has no stubs).
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--no-incremental",
            *map(str, examples),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        # mypy does not follow the editable install's import hook: show it this checkout.
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no issues found in {len(examples)} source files" in result.stdout


def test_readme_links_nothing_outside_the_repository() -> None:
    # The one outside link is the Binder launch badge, which a workshop needs (issue 11).
    badge = r"\[!\[Launch on Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]"
    badge += r"\(https://mybinder\.org/v2/gh/[^)\s]+\)"
    text, badges = re.subn(badge, "", README.read_text())
    assert badges == 1, "the Binder badge"
    assert not re.search(r"https?://", text), "a web link"
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert not target.startswith(("/", "..")), target
        assert (ROOT / target.partition("#")[0]).exists(), target
    assert "../" not in text, "a path outside the repository"
