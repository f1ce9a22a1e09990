"""The notebook figures: a live cluster in a real ipykernel, driven over jupyter_client.

* commit rate with the dashboard shown and updating, against the same without it (measured
  in alternation, a plain repetition then a dashboard one, each in a fresh kernel);
* the time a trivial cell takes (execute request to reply, seen by the client) while a
  writer commits at full speed in the kernel's trio run, beside the same on an idle kernel.

The cluster is the DESIGN 6.2 one: alpha the master, beta and gamma replicas (sync commits,
ack policy ALL), all in the kernel, on the simulated network with no link latency (the live
cluster's default few milliseconds would cap the writer at about a hundred commits a second).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ._ceiling import Config
from ._util import Figure, latency_us, log

SETUP = """
import json, time, trio
import hakit, hakit.jupyter as hj
cluster = hj.open_cluster(seed=1, latency=(0, 0))  # full speed: no link latency
alpha, beta, gamma = (cluster.add_node(n) for n in ("alpha", "beta", "gamma"))
cluster.make_master("alpha")
cluster.attach("beta", "alpha"); cluster.attach("gamma", "alpha")
await cluster.wait_synced("beta", "gamma")

async def writer(seconds):
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        async with alpha.transaction() as tx:
            tx.put(f"k{n % 1000}", b"x" * 100)
        n += 1
    return n / (time.perf_counter() - start)
"""

SHOW = "cluster  # the live dashboard, updating while the writer commits\n"
TIMELINE_TAB = """
board = cluster.dashboard()
board.tabs.selected_index = board.section_titles.index("Timeline")
tab = board.tabs.children[board.tabs.selected_index]
"""

#: Trivial cells timed per repetition.
CELLS = 200


class Kernel:
    """A python3 kernel (this interpreter's ipykernel) with a blocking client."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3")
        #: Widget updates (``comm_msg``) the kernel published while the last `run` ran.
        self.comm_messages = 0

    def run(self, code: str, timeout: float = 120.0) -> list[str]:
        """Execute `code`; return its stdout lines. Raises if the cell failed.

        Counts every widget update the kernel publishes meanwhile in `comm_messages`,
        whichever cell they are parented to (the dashboard refreshes from trio tasks
        started by an earlier cell; a front end routes them by comm, not by cell).
        """
        out: list[str] = []
        self.comm_messages = 0
        deadline = time.monotonic() + timeout
        msg_id = self.kc.execute(code)
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            kind = msg["msg_type"]
            if kind == "comm_msg":
                self.comm_messages += 1
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if kind == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self._reply(msg_id, deadline)
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}")
        return "".join(out).split()

    def _reply(self, msg_id: str, deadline: float) -> dict[str, Any]:
        while True:
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply  # type: ignore[no-any-return]

    def time_cell(self, code: str = "1", timeout: float = 60.0) -> float:
        """Seconds from sending an execute request for `code` to its execute reply."""
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        reply = self._reply(msg_id, deadline)
        elapsed = time.perf_counter() - start
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {reply['content'].get('ename')}")
        # Untimed: read its outputs up to the idle status, so that none pile up.
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return elapsed

    def close(self) -> None:
        try:
            self.run("hj.close()", timeout=30)
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)


def commit_rates(seconds: float) -> tuple[float, float, float]:
    """One kernel: the writer's rate without the dashboard, with it shown, and with its
    timeline tab on show.

    The plain rate is the mean of a run before the dashboard is shown and one after it is
    closed, so that a kernel still warming up (its event ring and transaction logs
    filling) or a change of load favours neither side.
    """
    kernel = Kernel()
    try:
        kernel.run(SETUP)
        kernel.run("await hj.run(writer, 0.3)")  # warm-up
        (before,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        if kernel.comm_messages:
            raise RuntimeError("widget messages while no dashboard was shown")
        kernel.run(SHOW)
        (shown,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        # Updating: the widget messages really went out while the writer ran.
        if kernel.comm_messages < 2:
            raise RuntimeError("the dashboard sent no updates while the writer ran")
        log(f"notebook: {kernel.comm_messages} dashboard updates sent in {seconds:g} s")
        # A side figure: the same with the live timeline's tab on show (it redraws too).
        kernel.run(TIMELINE_TAB)
        (timeline,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        (redraws,) = kernel.run("print(len(tab.data['messages']))")
        if int(redraws) == 0:
            raise RuntimeError("the timeline drew nothing while the writer ran")
        kernel.run("board.close()")  # no views left: plain again
        (after,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        if kernel.comm_messages:
            raise RuntimeError("widget messages after the dashboard was closed")
        log(f"notebook: plain {float(before):.0f} before the dashboard, {float(after):.0f} after")
        return (float(before) + float(after)) / 2, float(shown), float(timeline)
    finally:
        kernel.close()


def cell_latencies() -> tuple[list[float], list[float]]:
    """One kernel with the dashboard shown: trivial cells while idle, then while busy."""
    kernel = Kernel()
    try:
        kernel.run(SETUP + SHOW)

        def timed() -> list[float]:
            kernel.time_cell()
            return [kernel.time_cell() for _ in range(CELLS)]

        idle = timed()
        (before,) = kernel.run("h = hj.start_soon(writer, 3600); print(alpha.txid)")
        busy = timed()
        (done, after) = kernel.run("print(int(h.done), alpha.txid); h.cancel()")
        if done != "0":
            raise RuntimeError("the writer stopped during the measurement")
        log(f"notebook: {int(after) - int(before)} commits while the busy cells ran")
        return idle, busy
    finally:
        kernel.close()


def measure(cfg: Config) -> dict[str, Figure]:
    """Run the notebook figures (blocking: call it from a worker thread)."""
    plain = Figure("txn/s")
    shown = Figure("txn/s")
    for rep in range(cfg.reps):
        rates = commit_rates(cfg.duration)
        plain.add(rates[0])
        shown.add(rates[1], timeline_tab=rates[2])
        log(
            f"notebook commit rate {rep + 1}/{cfg.reps}: {rates[0]:.0f} plain, "
            f"{rates[1]:.0f} with the dashboard, {rates[2]:.0f} with its timeline shown"
        )
    shown.extra["paired_with_ceiling"] = True  # sample i beside plain's sample i
    idle = Figure("ms")
    busy = Figure("ms")
    for _ in range(max(1, cfg.reps - 1)):
        for figure, times in zip((idle, busy), cell_latencies(), strict=True):
            side = latency_us(times)
            figure.add(side["p99_us"] / 1000, p50_ms=side["p50_us"] / 1000)
    log(f"notebook trivial cell p99: {idle.median:.1f} ms idle, {busy.median:.1f} ms busy")
    return {
        "nb_commit_plain": plain,
        "nb_commit_dashboard": shown,
        "nb_cell_idle": idle,
        "nb_cell_busy": busy,
    }


if __name__ == "__main__":  # a quick look: python -m bench._notebook
    figures = measure(Config(reps=1, duration=1.0, warmup=0.2, snapshot_keys=0, handover_reps=1))
    print(json.dumps({k: v.to_json() for k, v in figures.items()}, indent=2))
