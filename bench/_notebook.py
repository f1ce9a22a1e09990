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

#: Trivial cells timed per repetition.
CELLS = 200


class Kernel:
    """A python3 kernel (this interpreter's ipykernel) with a blocking client."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3")

    def run(self, code: str, timeout: float = 120.0) -> list[str]:
        """Execute `code`; return its stdout lines. Raises if the cell failed."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}")
        return "".join(out).split()

    def close(self) -> None:
        try:
            self.run("hj.close()", timeout=30)
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)


def commit_rates(seconds: float) -> tuple[float, float]:
    """One kernel: the writer's rate without the dashboard, then with it shown."""
    kernel = Kernel()
    try:
        kernel.run(SETUP)
        kernel.run("await hj.run(writer, 0.3)")  # warm-up
        (plain,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        kernel.run(SHOW)
        (shown,) = kernel.run(f"print(await hj.run(writer, {seconds}))")
        (refreshes,) = kernel.run("print(cluster.dashboard()._refreshes)")
        if int(refreshes) < 2:
            raise RuntimeError("the dashboard did not refresh while the writer ran")
        return float(plain), float(shown)
    finally:
        kernel.close()


def cell_latencies() -> tuple[list[float], list[float]]:
    """One kernel with the dashboard shown: trivial cells while idle, then while busy."""
    kernel = Kernel()
    try:
        kernel.run(SETUP + SHOW)

        def timed() -> list[float]:
            kernel.run("1")
            times = []
            for _ in range(CELLS):
                start = time.perf_counter()
                kernel.run("1")
                times.append(time.perf_counter() - start)
            return times

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
        shown.add(rates[1])
        log(f"notebook commit rate {rep + 1}/{cfg.reps}: {rates[0]:.0f} plain, "
            f"{rates[1]:.0f} with the dashboard")  # fmt: skip
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
