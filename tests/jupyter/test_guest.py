"""The guest run on an asyncio host loop: start, re-run, failures, close, no warnings."""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

import hakit
import hakit.jupyter as hj
from hakit.jupyter import _guest

ROOT = Path(__file__).resolve().parents[2]


def test_run_starts_once_and_trio_runs_between_awaits(aio) -> None:
    async def main() -> None:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(0.1)

        h = hj.start_soon(ticker)
        first = _guest.runtime()
        assert hj.start_soon(trio.sleep, 0).done is False
        assert _guest.runtime() is first  # idempotent: one run
        # The host loop keeps serving asyncio code while trio runs.
        for _ in range(3):
            await asyncio.sleep(0)
        assert await hj.run(trio.sleep, 1) is None
        assert len(ticks) >= 5
        assert not h.done
        h.cancel()
        with pytest.raises(hj.NotebookError, match="cancelled"):
            await h
        assert h.state == "cancelled"

    aio(main)


def test_a_busy_run_gives_the_host_loop_a_turn_after_every_batch(aio, monkeypatch) -> None:
    # trio's guest mode runs one batch of tasks per host callback: a run whose tasks never
    # block still lets the kernel's asyncio code (a cell, the kernel's message handling) in
    # between two batches, so the host is never starved however busy the cluster. Cells
    # that drive the run for a moment (adding nodes) must not leave it more than that.
    monkeypatch.setattr(_guest, "HOST_SLICE", math.inf)  # no idle moments (the next test)

    async def main() -> None:
        cluster = hj.open_cluster()
        for name in ("a", "b", "c"):
            cluster.add_node(name)
        cluster.make_master("a")
        batches = 0

        async def spin() -> None:
            nonlocal batches
            while True:
                batches += 1
                await trio.lowlevel.checkpoint()

        h = hj.start_soon(spin)
        await asyncio.sleep(0)
        before = batches
        for _ in range(100):
            await asyncio.sleep(0)  # one turn of the host loop each
        assert 99 <= batches - before <= 101
        h.cancel()

    aio(main)


def test_a_busy_run_leaves_the_host_loop_idle_moments(aio, monkeypatch) -> None:
    # A run that never blocks would keep the kernel's main thread (and the GIL) busy
    # nonstop, and the kernel's other threads would wait at every step of a message's way:
    # after each HOST_SLICE of nonstop batches the next one waits HOST_IDLE on the loop.
    now = [0.0]

    def fake_time() -> float:
        now[0] += 0.001  # each scheduling of a batch takes a millisecond
        return now[0]

    monkeypatch.setattr(_guest, "_host_time", fake_time)

    async def main() -> None:
        spins = 0

        async def spin() -> None:
            nonlocal spins
            while True:
                spins += 1
                await trio.lowlevel.checkpoint()

        loop = asyncio.get_running_loop()
        delays: list[float] = []
        real_call_later = loop.call_later

        def call_later(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            delays.append(delay)
            return real_call_later(delay, callback, *args)

        monkeypatch.setattr(loop, "call_later", call_later)
        h = hj.start_soon(spin)
        before = spins
        while spins - before < 60:
            await asyncio.sleep(0)
        idle = [d for d in delays if d == _guest.HOST_IDLE]
        # 1 ms per batch: a slice holds HOST_SLICE / 1 ms batches, then one waits.
        slices = (spins - before) // (round(_guest.HOST_SLICE / 0.001) + 1)
        assert slices >= 3
        assert slices - 1 <= len(idle) <= slices + 1, delays
        h.cancel()

    aio(main)


def test_trio_does_not_take_over_sigint(aio) -> None:
    # Interrupt must stop the running cell, never cancel the whole trio run. ipykernel puts
    # the default handler in place while a cell runs, which is when trio would take over.
    async def main() -> None:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            hj.start_soon(trio.sleep, 0)
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)  # lands in the host code, as in a cell
            assert _guest.current_runtime() is not None
            assert await hj.run(trio.sleep, 1) is None  # the run survived
        finally:
            signal.signal(signal.SIGINT, previous)

    aio(main)


def test_failure_is_reported_in_the_handle_and_the_run_goes_on(aio, capfd) -> None:
    async def main() -> None:
        async def crash() -> None:
            await trio.sleep(1)
            raise ValueError("node crashed")

        cluster = hj.open_cluster(seed=3)
        cluster.add_node("a")
        bad = hj.start_soon(crash)
        with pytest.raises(ValueError, match="node crashed"):
            await bad
        assert bad.state == "failed"
        assert isinstance(bad.exception(), ValueError)
        assert "failed: ValueError: node crashed" in repr(bad)
        # Everything else still runs.
        assert await hj.run(trio.sleep, 0) is None
        assert not cluster.closed
        assert cluster["a"].role is hakit.Role.STANDALONE
        write = cluster.write("k", 1, node="a")
        assert (await write).txid == 1
        # A failing twin is logged too.
        bad_write = cluster.write("k", object(), node="a")
        with pytest.raises(hakit.InvalidArgumentError):
            await bad_write
        assert any(e.kind == "error" and "InvalidArgumentError" in e.detail for e in cluster.log), (
            cluster.log
        )

    aio(main)
    out, err = capfd.readouterr()
    assert out == "" and err == "", "background tasks must not print"


def test_result_before_done_fails_at_once_naming_await(aio) -> None:
    async def main() -> None:
        h = hj.start_soon(trio.sleep, 5)
        with pytest.raises(hj.NotebookError, match="await h"):
            h.result()
        with pytest.raises(hj.NotebookError, match="still running"):
            h.exception()
        await h
        assert h.result() is None and h.exception() is None

    aio(main)


def test_rerunning_open_cluster_replaces_the_old_cluster(aio) -> None:
    async def main() -> None:
        first = hj.open_cluster(seed=1)
        node = first.add_node("alpha")
        run = _guest.runtime()
        second = hj.open_cluster(seed=1)  # the same cell, run again
        assert first.closed and not second.closed
        assert _guest.runtime() is run
        with pytest.raises(hakit.NodeClosedError):
            await node.listen("mem:again")
        again = second.add_node("alpha")  # the name is free in the new cluster
        assert again.address == "mem:alpha"
        with pytest.raises(hj.NotebookError, match="closed"):
            first.add_node("beta")
        other = hj.open_cluster(seed=2, name="other")  # another name: both live
        assert not second.closed and not other.closed

    aio(main)


def test_close_ends_the_run_and_a_new_one_can_start(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster()
        cluster.add_node("a")
        run = _guest.runtime()
        hj.close()
        assert run.finished and cluster.closed
        assert _guest.current_runtime() is None
        fresh = hj.open_cluster()
        assert _guest.runtime() is not run
        assert fresh.add_node("a").address == "mem:a"

    aio(main)


def test_outside_a_loop_the_error_names_asyncio_run() -> None:
    with pytest.raises(hj.NotebookError, match=r"asyncio\.run"):
        hj.open_cluster()


def test_inside_trio_code_sync_twins_name_the_trio_api(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster()

        async def from_trio() -> None:
            cluster.add_node("x")

        with pytest.raises(hj.NotebookError, match="trio API"):
            await hj.run(from_trio)

    aio(main)


@pytest.mark.parametrize("ending", ["close", "no close", "loop left running"])
def test_exit_without_close_leaves_no_abandoned_run(ending: str) -> None:
    # A kernel that shuts down (or a script that ends) with the run still up: the run is
    # finished at interpreter exit, without trio's "guest run got abandoned" warning.
    script = textwrap.dedent(
        f"""
        import asyncio, atexit, gc, sys

        def check():  # registered first, so it runs after hakit's own exit handler
            from hakit.jupyter import _guest
            print("finished" if _guest._runtime.finished else "still running")

        atexit.register(check)
        import hakit.jupyter as hj

        async def main():
            cluster = hj.open_cluster(seed=1)
            cluster.add_node("alpha")
            cluster.make_master("alpha")
            cluster.add_node("beta")
            h = cluster.attach("beta", "alpha")
            await cluster.wait_synced("beta")
            cluster.write("k", 1)  # still in flight when the script ends
            if {ending!r} == "close":
                hj.close()

        if {ending!r} == "loop left running":
            loop = asyncio.new_event_loop()
            loop.run_until_complete(main())  # the loop is stopped, not closed
        else:
            asyncio.run(main())
        gc.collect()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "finished"]
    assert "abandoned" not in result.stderr, result.stderr
    assert result.stderr == ""
