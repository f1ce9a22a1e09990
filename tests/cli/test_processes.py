"""Nodes as real processes on 127.0.0.1, operated with the CLI: writes, reads, status, force
master, kill -9 and promote; strangers, replayed handshakes, TLS and mutual TLS.

Waiting is event-driven: every node prints one line per event, and a test waits for the line
it needs (with a generous deadline, never a sleep).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from hakit import StopReason
from hakit._cli import main
from hakit.protocol import FrameDecoder, Kind, encode_frame
from hakit.protocol import _auth as auth

DEADLINE = 30.0  # seconds; a loaded machine is slow, a hang fails anyway


class NodeProcess:
    """A ``python -m hakit node`` child, its address, and its output lines as they come."""

    def __init__(self, name: str, *args: str) -> None:
        listen = "127.0.0.1:0"  # the node reports the port it got
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hakit", "node", name, "--listen", listen, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        first = self.wait_for(rf"^{name} listening at ")
        self.address = first.rsplit(" ", 1)[1]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # end of output

    def wait_for(self, pattern: str) -> str:
        """Return the next output line matching `pattern` (earlier lines are kept in seen)."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queue.Empty:
                why = f"{self.name}: no line matching {pattern!r}:\n{self.log}"
                raise AssertionError(why) from None
            if line == "" and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited: no line matching {pattern!r}:\n{self.log}"
                )
            self.seen.append(line)
            if regex.search(line):
                return line

    @property
    def log(self) -> str:
        return "\n".join(self.seen)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def procs() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
        proc.proc.wait()
        # The process is gone, so its output ends: let the pump read to the end before the
        # pipe is closed under it (closing first made the thread fail on a closed file,
        # reported against whichever test ran next).
        proc.pump.join(timeout=DEADLINE)
        assert proc.proc.stdout is not None
        proc.proc.stdout.close()


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "secret"
    path.write_bytes(b"k2Xo9wQmT3yZ1Lr8uPcN4vBe7HsAdF0g\n")
    path.chmod(0o600)
    return str(path)


def hakit(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run one CLI command in this process (as ``hakit ARGS``): status, stdout, stderr."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def hakit_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one CLI command as its own process, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "hakit", *args],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )  # fmt: skip


def test_the_cli_runs_a_cluster_of_processes_through_force_master_kill_and_promote(
    procs: list[NodeProcess], secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sec = ("--secret-file", secret_file)
    alpha = NodeProcess("alpha", *sec)
    procs.append(alpha)
    beta = NodeProcess("beta", "--master", alpha.address, *sec)
    gamma = NodeProcess("gamma", "--master", alpha.address, *sec)
    procs += [beta, gamma]
    beta.wait_for("replica beta synced")
    gamma.wait_for("replica gamma synced")
    alpha.wait_for(r"\d{2}:\d{2}:\d{2}\.\d{3}.* alpha: role standalone -> master")

    # Writes and reads, the first one from a CLI process of its own.
    done = hakit_process("put", alpha.address, "greeting", "hello", *sec)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"committed txid 1, acknowledged by (beta, gamma|gamma, beta)\n", done.stdout
    )
    assert hakit("put", alpha.address, "n", "[1, 2]", "--json", *sec, capsys=capsys)[0] == 0
    assert hakit("get", gamma.address, "greeting", *sec, capsys=capsys)[:2] == (0, "hello\n")
    assert hakit("get", beta.address, "n", *sec, capsys=capsys)[:2] == (0, "[1, 2]\n")
    status, _, err = hakit("get", beta.address, "missing", *sec, capsys=capsys)
    assert (status, err) == (1, "(no key 'missing')\n")
    status, _, err = hakit("put", beta.address, "x", "1", *sec, capsys=capsys)
    assert status == 1 and "is a replica and cannot accept writes" in err
    assert f"the master is at {alpha.address}" in err

    # Status, as JSON and as text.
    status, out, _ = hakit("status", alpha.address, "--json", *sec, capsys=capsys)
    report = json.loads(out)
    assert (report["role"], report["txid"], report["generation"]) == ("master", 2, 1)
    assert sorted((r["replica"], r["lag"]) for r in report["replicas"]) == [
        ("beta", 0),
        ("gamma", 0),
    ]
    assert report["channels"]["requests_received"] >= 3
    status, out, _ = hakit("status", gamma.address, *sec, capsys=capsys)
    assert status == 0
    assert re.search(r"^role +replica$", out, re.M) and f"alpha at {alpha.address}" in out

    # Force master: beta takes over; gamma follows it; alpha steps down.
    status, out, _ = hakit("force-master", beta.address, *sec, capsys=capsys)
    assert (status, out) == (0, "beta is the master (generation 2)\n")
    gamma.wait_for("master changed alpha -> beta")
    beta.wait_for("replica gamma synced")
    alpha.wait_for("alpha: role master -> standalone")
    status, out, _ = hakit("put", beta.address, "after-force", "1", *sec, capsys=capsys)
    assert (status, out) == (0, "committed txid 3, acknowledged by gamma\n")
    assert hakit("put", alpha.address, "stale", "1", *sec, capsys=capsys)[0] == 1

    # kill -9 of the master; gamma, which holds every acknowledged write, is promoted.
    beta.proc.send_signal(signal.SIGKILL)
    beta.proc.wait(timeout=DEADLINE)
    gamma.wait_for("replica stopped: CONNECTION_ABORTED")
    status, out, _ = hakit("promote", gamma.address, *sec, capsys=capsys)
    assert (status, out) == (0, "gamma is the master (generation 3)\n")
    for key, value in (("greeting", "hello"), ("n", "[1, 2]"), ("after-force", "1")):
        assert hakit("get", gamma.address, key, *sec, capsys=capsys)[:2] == (0, f"{value}\n")
    # The old master alpha is pointed at the new one and catches up.
    status, out, _ = hakit("attach", alpha.address, gamma.address, *sec, capsys=capsys)
    assert (status, out) == (0, f"alpha is attached to {gamma.address}\n")
    assert hakit("put", gamma.address, "last", "1", *sec, capsys=capsys)[1] == (
        "committed txid 4, acknowledged by alpha\n"
    )
    assert hakit("get", alpha.address, "after-force", *sec, capsys=capsys)[:2] == (0, "1\n")

    # A promote of a replica with a live master is refused, with the way out.
    status, _, err = hakit("promote", alpha.address, *sec, capsys=capsys)
    assert status == 1 and "use force-master" in err
    for proc in (alpha, gamma):
        assert hakit("shutdown", proc.address, *sec, capsys=capsys)[0] == 0
        assert proc.proc.wait(timeout=DEADLINE) == 0


def test_a_stranger_gets_only_the_refusal_and_a_replayed_handshake_fails(
    procs: list[NodeProcess], secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = NodeProcess("vault", "--secret-file", secret_file)
    procs.append(node)
    host, port = node.address.rsplit(":", 1)
    status, _, err = hakit("put", node.address, "k", "v", capsys=capsys)  # no secret
    assert status == 4 and "requires the cluster secret" in err

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    # A replica hello without authentication: one REJECT of generation 0, nothing else.
    hello = [Kind.HELLO, 0, 1, "hakit", "thief", 0, 0, 0, None]
    got = exchange(encode_frame(hello))
    decoder = FrameDecoder()
    decoder.feed(got)
    assert decoder.drain() == [[Kind.REJECT, 0, StopReason.HANDSHAKE_FAILED, auth.SECRET_REQUIRED]]
    assert b"vault" not in got

    # A genuine handshake, recorded, then replayed on a new connection.
    secret = auth.check_secret(Path(secret_file).read_bytes())
    client = auth.ClientAuth(secret, os.urandom(auth.NONCE_SIZE))
    recorded = client.hello()
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(client.hello())
        decoder = FrameDecoder()
        done = False
        while not done:
            decoder.feed(sock.recv(65536))
            for value in decoder.drain():
                step = client.receive(value)
                assert step.failed is None
                if step.send is not None:
                    recorded += step.send
                    sock.sendall(step.send)
                done = step.done
    decoder = FrameDecoder()
    decoder.feed(exchange(recorded))
    challenge, refusal = decoder.drain()
    assert challenge[0] == auth.AuthKind.AUTH_CHALLENGE
    assert refusal == [auth.AuthKind.AUTH_FAIL, 0, auth.WRONG_SECRET]
    node.wait_for("refused unauthenticated peer: the cluster secrets differ")
    # The node is unharmed.
    assert hakit("put", node.address, "k", "v", "--secret-file", secret_file, capsys=capsys)[0] == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": root / "ca.pem", "cert": root / "node.pem", "key": root / "node.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


def test_tls_and_mutual_tls_between_processes(
    procs: list[NodeProcess], pki: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    mutual = ("--tls-cert", pki["cert"], "--tls-key", pki["key"], "--tls-ca", pki["ca"])
    master = NodeProcess("m", *mutual)
    replica = NodeProcess("r", "--master", master.address, *mutual)
    procs += [master, replica]
    replica.wait_for("replica r synced")
    status, out, _ = hakit("put", master.address, "k", "v", *mutual, capsys=capsys)
    assert (status, out) == (0, "committed txid 1, acknowledged by r\n")
    assert hakit("get", replica.address, "k", *mutual, capsys=capsys)[:2] == (0, "v\n")
    # Trusting the CA without a client certificate: the mutual TLS node refuses.
    status, _, err = hakit("status", master.address, "--tls-ca", pki["ca"], capsys=capsys)
    assert status == 3 and "could not reach" in err
    assert "this client presents none: give it one (--tls-cert)" in err  # the likely cause
    # Not trusting the CA: the certificate is not verified.
    own = ("--tls-cert", pki["cert"], "--tls-key", pki["key"])
    status, _, err = hakit("status", master.address, *own, capsys=capsys)
    assert status == 3 and "CERTIFICATE_VERIFY_FAILED" in err
    # Plain TCP to a TLS node gets nowhere.
    assert hakit("status", master.address, capsys=capsys)[0] == 3
    master.wait_for("refused unknown peer")
