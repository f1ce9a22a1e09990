"""What a user sees first: --help of every command, --version, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hakit
from hakit._cli import main, parser
from hakit._cli._ops import COMMANDS


@pytest.mark.parametrize("command", ["demo", "node", *COMMANDS])
def test_every_command_has_help_with_the_program_name(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["hakit"])
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hakit {command} ")
    assert "ADDR" in out or command in ("demo", "node")


def test_python_dash_m_names_itself_so_and_reports_its_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hakit", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout == f"python -m hakit {hakit.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "hakit", "status"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m hakit status")


def test_an_unreachable_node_is_one_line_and_status_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["hakit"])
    assert main(["status", "127.0.0.1:1", "--timeout", "5"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hakit: error: could not reach the node")
    assert main(["get", "not-an-address", "k"]) == 1
    assert "bad address" in capsys.readouterr().err


def test_the_top_help_lists_every_command() -> None:
    text = parser().format_help()
    for command in ("demo", "node", *COMMANDS):
        assert f"    {command}" in text
    assert "exit status:" in text
