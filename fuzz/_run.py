"""The fuzz run: a master and a healthy replica in processes of their own, a writer, attackers.

The master (``python -m fuzz._server master``) and its replica run in two processes, over
real TCP on 127.0.0.1; this process runs a writer (a hakit node that commits on the master
through a message channel and remembers every acknowledged write) and the attackers, which
open connection after connection to the master and send it the cases of a seeded
`Generator`. Every couple of seconds, and at the end, the run checks:

* the master process is alive (a crash ends it with a traceback on its stderr);
* it is still the master, in its first generation (no step-down);
* the healthy replica is still attached, and was never detached nor stopped;
* no acknowledged write is lost: at the end, the master and the replica hold every one;
* the writer never failed;
* the master's RSS, sampled throughout: its growth from the start is reported.

The last cases sent are kept; when a check fails they are written to a JSON file that
``python -m fuzz --replay FILE`` sends again, one at a time, checking after each.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

import hakit
from hakit.protocol import _messages as m

from ._frames import Case, Generator

ROOT = Path(__file__).resolve().parent.parent
#: Cases kept for the failure file.
RECENT = 400
#: Slow and partial connections held open at once.
MAX_HELD = 24


class FuzzFailure(Exception):
    """A check failed."""


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    frames: int = 0
    #: Of `frames`: the hostile ones (the rest is valid channel traffic sent before them).
    hostile_frames: int = 0
    cases: int = 0
    connections_refused_early: int = 0
    writes_acked: int = 0
    writer_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0
    master_events: int = 0
    refused: int = 0
    seconds: float = 0.0
    master_cpu_seconds: float = 0.0
    fuzzer_cpu_seconds: float = 0.0
    failure_file: str | None = None
    top: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        out = dict(self.__dict__)
        out["rss_growth_kib"] = self.rss_end_kib - self.rss_start_kib
        out["rss_peak_growth_kib"] = self.rss_peak_kib - self.rss_start_kib
        out["ok"] = not self.failures
        return out


class Process:
    """One server process of the run, killed by PID when the run ends."""

    def __init__(self, *args: str) -> None:
        self.err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-{os.getpid()}-{args[0]}.err"
        self.stderr = open(self.err_path, "w")  # noqa: SIM115 - closed in kill()
        # Popen from the main thread (PDEATHSIG follows the forking thread), before trio runs.
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fuzz._server", *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise FuzzFailure(f"{args[0]} did not start: {self.stderr_tail()}")
        self.address: str = json.loads(line)["address"]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self, size: int = 4000) -> str:
        self.stderr.flush()
        with suppress(OSError):
            return self.err_path.read_text()[-size:]
        return ""

    def kill(self) -> None:
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self.stderr.close()
        with suppress(OSError):
            self.err_path.unlink()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    with suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _rss_kib(pid: int) -> int:
    with suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Run:
    """One fuzz run against a fresh master and replica."""

    def __init__(self, seed: int, token: bytes, master: Process, replica: Process) -> None:
        self.seed = seed
        self.token = token
        self.master = master
        self.replica = replica
        self.report = Report(seed)
        self.recent: deque[Case] = deque(maxlen=RECENT)
        self.acked: dict[bytes, bytes] = {}
        self.held = 0
        self.held_done = trio.Event()
        self.writer: hakit.Node | None = None
        self.start_generation = 0
        self.writer_stop = False
        self.top = ""
        self.writer_stopped = trio.Event()

    # -- talking to the servers --------------------------------------------------------------
    async def ask(self, address: str, *parts: bytes) -> bytes:
        assert self.writer is not None
        return await self.writer.channel(address).send_request(list(parts), timeout=60)

    async def master_stats(self) -> dict[str, Any]:
        return json.loads(await self.ask(self.master.address, b"stats"))  # type: ignore[no-any-return]

    async def check(self, final: bool = False) -> None:
        """Raise `FuzzFailure` if any check fails now."""
        report = self.report
        if not self.master.alive():
            raise FuzzFailure(f"the master crashed:\n{self.master.stderr_tail()}")
        if not self.replica.alive():
            raise FuzzFailure(f"the replica process crashed:\n{self.replica.stderr_tail()}")
        rss = _rss_kib(self.master.popen.pid)
        report.rss_peak_kib = max(report.rss_peak_kib, rss)
        try:
            stats = await self.master_stats()
            rstats = json.loads(await self.ask(self.replica.address, b"stats"))
        except hakit.HakitError as exc:
            raise FuzzFailure(f"the master or replica does not answer: {exc!r}") from None
        report.master_events = stats["events"]
        report.refused = stats["refused"]
        if stats["role"] != "master" or stats["generation"] != self.start_generation:
            raise FuzzFailure(
                f"the master stepped down: role {stats['role']}, generation "
                f"{self.start_generation} -> {stats['generation']}"
            )
        healthy_detached = [d for d in stats["detached"] if d[0] == "r"]
        if "r" not in stats["replicas"] or healthy_detached or rstats["stops"]:
            raise FuzzFailure(
                f"the healthy replica lost its link: attached={stats['replicas']}, "
                f"detached={healthy_detached}, replica stops={rstats['stops']}"
            )
        if report.writer_errors:
            raise FuzzFailure(f"the writer failed: {report.writer_errors[:3]}")
        if final:
            await self._check_writes(stats["txid"])

    async def _check_writes(self, txid: int) -> None:
        with trio.fail_after(60):
            # Another process's state: polled, there is nothing local to wait on.
            while json.loads(await self.ask(self.replica.address, b"stats"))["txid"] < txid:  # noqa: ASYNC110
                await trio.sleep(0.05)
        on_master = msgpack.unpackb(await self.ask(self.master.address, b"dump", self.token))
        on_replica = msgpack.unpackb(await self.ask(self.replica.address, b"dump"))
        for where, items in (("master", on_master), ("replica", on_replica)):
            lost = [k for k, v in self.acked.items() if items.get(k) != v]
            if lost:
                raise FuzzFailure(
                    f"{len(lost)} acknowledged writes lost on the {where}: {lost[:5]}"
                )

    # -- the writer ---------------------------------------------------------------------------
    async def write_forever(self) -> None:
        """Commit on the master through a channel, one write at a time, remembering each."""
        try:
            n = 0
            while not self.writer_stop:
                key = b"w/%d" % (n % 1000)
                value = b"%d" % n
                try:
                    await self.ask(self.master.address, b"put", self.token, key, value)
                except hakit.HakitError as exc:
                    self.report.writer_errors.append(f"write {n}: {exc!r}")
                    return
                self.acked[key] = value
                self.report.writes_acked += 1
                n += 1
                await trio.sleep(0.002)
        finally:
            self.writer_stopped.set()

    # -- attackers ----------------------------------------------------------------------------
    async def attack(self, case: Case) -> None:
        """Send one case on a connection of its own."""
        self.recent.append(case)
        host, port = self.master.address.rsplit(":", 1)
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError:
            self.report.connections_refused_early += 1
            return
        try:
            with trio.move_on_after(30):
                await self._send_case(stream, case)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the master closed it: that is what it should do with most cases
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        self.report.frames += len(case.frames)
        self.report.hostile_frames += len(case.frames) - case.valid
        self.report.cases += 1

    async def _send_case(self, stream: trio.SocketStream, case: Case) -> None:
        if case.opening != "none":
            await stream.send_all(self._opening(case))
            with trio.move_on_after(5):
                await stream.receive_some(65536)  # its answer (or the refusal)
        for data in case.frames:
            if case.chunk:
                for start in range(0, len(data), case.chunk):
                    await stream.send_all(data[start : start + case.chunk])
                    await trio.sleep(case.pause)
            else:
                await stream.send_all(data)
        if case.ending == "hold":
            await trio.sleep(case.hold)
        if case.ending in ("drain", "hold"):
            with suppress(trio.BrokenResourceError, OSError):
                await stream.send_eof()
            with trio.move_on_after(2):
                while await stream.receive_some(65536):
                    pass

    def _opening(self, case: Case) -> bytes:
        gen = self.start_generation
        if case.opening == "channel":
            return m.ChannelHello(gen, f"fz{case.id}", "hakit", m.PROTOCOL_VERSION).encode()
        # A replica that attaches under a fresh name; it never asks to take over.
        hello = m.Hello(gen, m.PROTOCOL_VERSION, "hakit", f"fz{case.id}", 0, 0, 0, None)
        return hello.encode()

    async def attacker(self, cases: Iterable[Case], nursery: trio.Nursery) -> None:
        for case in cases:
            if case.kind in ("slow", "partial"):
                if self.held >= MAX_HELD:
                    continue  # enough held already: skip, do not wait
                self.held += 1
                nursery.start_soon(self._held, case)
            else:
                await self.attack(case)

    async def _held(self, case: Case) -> None:
        try:
            await self.attack(case)
        finally:
            self.held -= 1


def _cases(generator: Generator, frames: int, deadline: float, report: Report) -> Iterable[Case]:
    while report.frames < frames and time.monotonic() < deadline:
        yield generator.case()


async def _main(run: Run, frames: int, minutes: float, workers: int) -> None:
    report = run.report
    started = time.monotonic()
    deadline = started + minutes * 60
    async with hakit.open_node("writer") as writer:
        run.writer = writer
        stats = await run.master_stats()
        run.start_generation = stats["generation"]
        await run.check()
        report.rss_start_kib = report.rss_peak_kib = _rss_kib(run.master.popen.pid)
        generator = Generator(run.seed, run.start_generation)
        cases = iter(_cases(generator, frames, deadline, report))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.write_forever)
            async with trio.open_nursery() as attackers:
                for _ in range(workers):
                    attackers.start_soon(run.attacker, cases, attackers)

                async def watch() -> None:
                    last = 0
                    while True:
                        await trio.sleep(2)
                        await run.check()
                        if report.frames - last >= 10_000:
                            last = report.frames
                            print(f"fuzz: {report.frames} frames, {report.cases} cases, "
                                  f"master RSS {_rss_kib(run.master.popen.pid)} KiB, "
                                  f"{report.master_events} events, {report.writes_acked} writes",
                                  file=sys.stderr, flush=True)  # fmt: skip

                nursery.start_soon(watch)
            # Every case is sent; the held ones are over too. The writer finishes its last
            # write (so that every write it made is acknowledged), then the master settles.
            run.writer_stop = True
            await run.writer_stopped.wait()
            await trio.sleep(1)
            await run.check(final=True)
            report.rss_end_kib = _rss_kib(run.master.popen.pid)
            if os.environ.get("FUZZ_TRACEMALLOC"):
                run.top = (await run.ask(run.master.address, b"top")).decode()
            report.rss_peak_kib = max(report.rss_peak_kib, report.rss_end_kib)
            nursery.cancel_scope.cancel()
    report.seconds = round(time.monotonic() - started, 1)
    report.master_cpu_seconds = round(_cpu_seconds(run.master.popen.pid), 1)
    report.fuzzer_cpu_seconds = round(_cpu_seconds(os.getpid()), 1)


def fuzz(seed: int, frames: int, minutes: float, workers: int = 4) -> Report:
    """Run the fuzzer; return its report (``report.failures`` empty when every check held)."""
    token = secrets.token_bytes(16)
    master = Process("master", token.hex())
    replica = None
    try:
        replica = Process("replica", master.address)
        run = Run(seed, token, master, replica)
        try:
            trio.run(_main, run, frames, minutes, workers)
        except* FuzzFailure as group:
            run.report.failures += [str(exc) for exc in _leaves(group)]
        run.report.top = run.top
        if run.report.failures:
            run.report.failure_file = _save(run)
        return run.report
    finally:
        if replica is not None:
            replica.kill()
        master.kill()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _save(run: Run) -> str:
    path = (
        Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-failure-seed{run.seed}-{os.getpid()}.json"
    )
    body = {
        "seed": run.seed,
        "failures": run.report.failures,
        "cases": [case.to_json() for case in run.recent],
    }
    path.write_text(json.dumps(body, indent=1))
    return str(path)


def replay(path: str) -> Report:
    """Send the cases of a failure file again, one at a time, checking after each.

    The report's failures name the first case after which a check failed.
    """
    body = json.loads(Path(path).read_text())
    cases = [Case.from_json(c) for c in body["cases"]]
    token = secrets.token_bytes(16)
    master = Process("master", token.hex())
    replica = None
    try:
        replica = Process("replica", master.address)
        run = Run(body["seed"], token, master, replica)

        async def go() -> None:
            async with hakit.open_node("writer") as writer:
                run.writer = writer
                run.start_generation = (await run.master_stats())["generation"]
                for case in cases:
                    case.hold = min(case.hold, 1.0)
                    await run.attack(case)
                    await trio.sleep(0.2)
                    try:
                        await run.check()
                    except FuzzFailure as exc:
                        run.report.failures.append(
                            f"after case {case.id} ({case.kind}, {case.opening}): {exc}\n"
                            f"case: {json.dumps(case.to_json())[:2000]}"
                        )
                        return

        trio.run(go)
        return run.report
    finally:
        if replica is not None:
            replica.kill()
        master.kill()
