"""``python -m hakit node`` fails as a user expects: one line, a distinct status, no traceback.

Real processes on 127.0.0.1 (issue 7, point 6): the address in use is named; a refused
handshake, a bad --sqlite path and an unreachable master each have their own exit status;
Ctrl-C exits 130; a --once replica whose master died exits non-zero; a replica started
before its master waits for it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakit._cli._common import EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_UNREACHABLE
from hakit._cli._node import EXIT_ADDRESS_IN_USE, EXIT_BAD_STORAGE

from .test_processes import DEADLINE, NodeProcess, procs

__all__ = ["procs"]  # the fixture, shared with the process tests


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hakit", "node", *args],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )  # fmt: skip


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def busy_address() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_address_in_use_is_named(busy_address: str) -> None:
    result = node("alpha", "--listen", busy_address)
    assert result.returncode == EXIT_ADDRESS_IN_USE
    assert busy_address in one_line(result.stderr) and "in use" in result.stderr


def test_a_bad_sqlite_path_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "db.sqlite"
    result = node("alpha", "--sqlite", str(path))
    assert result.returncode == EXIT_BAD_STORAGE
    assert f"--sqlite {path}" in one_line(result.stderr)


def test_a_refused_handshake_has_its_own_status(procs: list[NodeProcess]) -> None:
    procs.append(master := NodeProcess("alpha", "--cluster", "red"))
    result = node("beta", "--cluster", "blue", "--master", master.address, "--once")
    assert result.returncode == EXIT_REFUSED
    assert "cluster 'blue'" in one_line(result.stderr)


def test_an_unreachable_master_is_waited_for_then_reported() -> None:
    nowhere = free_address()
    result = node("beta", "--master", nowhere, "--timeout", "1", "--once")
    assert result.returncode == EXIT_UNREACHABLE
    line = one_line(result.stderr)
    assert f"the master at {nowhere} was not reached within 1 s" in line
    assert "attempts" in line  # it tried again, with backoff, until its timeout


def test_a_replica_started_before_its_master_attaches_when_it_comes(
    procs: list[NodeProcess],
) -> None:
    address = free_address()
    procs.append(replica := NodeProcess("beta", "--master", address, "--timeout", "30"))
    procs.append(NodeProcess("alpha", "--listen", address))  # listens where beta waits
    replica.wait_for(r"synced")


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hakit", "node", "alpha"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a test run started in the background inherits an ignored
        # SIGINT, and a child would inherit that too.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("alpha listening at 127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err


def test_a_once_replica_whose_master_died_exits_non_zero(procs: list[NodeProcess]) -> None:
    procs.append(master := NodeProcess("alpha"))
    procs.append(replica := NodeProcess("beta", "--master", master.address, "--once"))
    replica.wait_for(r"synced")
    master.proc.kill()
    master.proc.wait(timeout=DEADLINE)
    status = replica.proc.wait(timeout=DEADLINE)
    assert status != 0
    replica.wait_for(r"CONNECTION_ABORTED")
    assert "Traceback" not in replica.log
