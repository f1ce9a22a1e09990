"""The guest run in a real ipykernel, driven over jupyter_client: Interrupt stops only the
running cell, and shutting the kernel down finishes the run cleanly (no "guest run got
abandoned" warning). Waits are on the kernel's own replies, never fixed delays."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipykernel")
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parents[2]


class Kernel:
    def __init__(self, tmp_path: Path) -> None:
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.stderr = (tmp_path / "kernel.stderr").open("w+")
        self.km.start_kernel(cwd=str(ROOT), stderr=self.stderr)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60) -> dict[str, Any]:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] in ("execute_result", "error"):
                out.append(str(msg["content"].get("data", {}).get("text/plain", "")))
                out.append(msg["content"].get("ename", ""))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return {"status": reply["content"]["status"], "ename": reply["content"].get("ename"),
                "out": "".join(out)}  # fmt: skip


def test_interrupt_stops_the_cell_not_the_run(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    try:
        assert (
            kernel.run(
                "import asyncio, hakit, hakit.jupyter as hj\n"
                "cluster = hj.open_cluster(seed=1)\n"
                "for n in ('alpha', 'beta'): cluster.add_node(n)\n"
                "cluster.make_master('alpha'); b = cluster.attach('beta', 'alpha')\n"
                "await cluster.wait_synced('beta')"
            )["status"]
            == "ok"
        )
        # A long await in a cell, interrupted once the cell's code runs. Not on "busy": the
        # kernel publishes it before it starts the cell, and an interrupt that early ends the
        # request in ipykernel itself, with no reply at all (a race under load).
        msg_id = kernel.kc.execute("print('awaiting', flush=True)\nawait asyncio.sleep(3600)")
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=30)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "stream"
                and "awaiting" in msg["content"]["text"]
            ):
                break
        kernel.km.interrupt_kernel()
        reply = kernel.kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        # ipykernel aborts the execute requests that reach it before it has finished
        # aborting the interrupted cell's queue (the "stop aborting" message is posted from
        # its shell channel thread, late under load): a cell sent just now may come back
        # "aborted" without running. Wait for one that runs, then look.
        statuses = [kernel.run("pass")["status"]]
        while statuses[-1] == "aborted" and len(statuses) < 50:
            statuses.append(kernel.run("pass")["status"])
        assert statuses[-1] == "ok", statuses
        # The run and the cluster survived: a commit replicates.
        after = kernel.run(
            "r = await cluster.write('k', 'v')\n"
            "await cluster.wait_until(lambda: cluster['beta'].get('k') == 'v')\n"
            "print(r.txid, b.done, cluster.closed)"
        )
        assert after["status"] == "ok", after
        assert after["out"].split() == ["1", "False", "False"]
    finally:
        kernel.run("hj.close()")
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=False)
        kernel.stderr.close()


def test_kernel_shutdown_finishes_the_run_cleanly(tmp_path: Path) -> None:
    marker = tmp_path / "at-exit.txt"
    kernel = Kernel(tmp_path)
    try:
        setup = kernel.run(
            "import atexit\n"
            "def check():  # registered before hakit's own exit handler, so it runs after it\n"
            "    from hakit.jupyter import _guest\n"
            f"    open({str(marker)!r}, 'w').write(str(_guest._runtime.finished))\n"
            "atexit.register(check)\n"
            "import hakit.jupyter as hj\n"
            "cluster = hj.open_cluster(seed=1)\n"
            "for n in ('alpha', 'beta'): cluster.add_node(n)\n"
            "cluster.make_master('alpha'); b = cluster.attach('beta', 'alpha')\n"
            "await cluster.wait_synced('beta')\n"
            "cluster.write('k', 1)  # in flight as the kernel goes"
        )
        assert setup["status"] == "ok", setup
    finally:
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=False)  # a shutdown request, as JupyterLab sends
        kernel.stderr.close()
    assert marker.read_text() == "True"
    stderr = (tmp_path / "kernel.stderr").read_text()
    assert "abandoned" not in stderr and "Traceback" not in stderr, stderr


def test_a_hakit_await_in_the_cell_that_imports_hakit_jupyter_is_explained(
    tmp_path: Path,
) -> None:
    kernel = Kernel(tmp_path)
    try:
        first = kernel.run(
            "import hakit.jupyter as hj\n"
            "cluster = hj.open_cluster(seed=1)\n"
            "alpha = cluster.add_node('alpha')\n"
            "async with alpha.transaction() as tx:\n"
            "    tx.put('k', 1)\n"
        )
        assert first["status"] == "error"
        assert "NotebookError" in first["out"] or first["ename"] == "NotebookError", first
        # Run again (the bridge is in place now): it works.
        again = kernel.run(
            "async with alpha.transaction() as tx:\n    tx.put('k', 1)\nprint(alpha.get('k'))"
        )
        assert again["status"] == "ok" and again["out"].strip() == "1", again
    finally:
        kernel.run("hj.close()")
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=False)
        kernel.stderr.close()


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("how", ["shutdown", "killed"])
def test_node_processes_end_with_the_kernel(tmp_path: Path, how: str) -> None:
    kernel = Kernel(tmp_path)
    try:
        spawned = kernel.run(
            "import hakit.jupyter as hj\n"
            "cluster = hj.open_cluster(seed=1)\n"
            "cluster.add_node('alpha'); cluster.make_master('alpha')\n"
            "beta = await cluster.spawn_node('beta', master='alpha')\n"
            "print(beta.pid)"
        )
        assert spawned["status"] == "ok", spawned
        pid = int(spawned["out"].split()[0])
        assert not _gone(pid)
    finally:
        kernel.kc.stop_channels()
        # A shutdown request as JupyterLab sends; or the kernel killed outright (a hung
        # kernel restarted), when only the child's own --exit-with-parent can end it.
        kernel.km.shutdown_kernel(now=how == "killed")
        kernel.stderr.close()
    if how == "shutdown":
        assert _gone(pid)
    else:
        deadline = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # a bounded wait on the condition, not a fixed delay
        assert _gone(pid)
