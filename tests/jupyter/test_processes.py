"""Node processes in a live cluster: `spawn_node` twins, their dashboard rows, real signals.

These tests start real ``hakit node`` processes over TCP loopback, so the guest run keeps
real time (``aio(main, clock=False)``); every wait is on a condition, bounded.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest

import hakit
import hakit.jupyter as hj
from hakit.widgets import ClusterDashboard
from hakit.widgets._dashboard import table_html, topology_graph


async def call(process: hakit.NodeProcess, op: str, **args: object) -> dict:
    """One control request from asyncio code (a cell would just ``await process.call``)."""
    return await hj.run(functools.partial(process.call, op, **args))


def row(cluster: hj.LiveCluster, name: str) -> hj.NodeRow:
    return {r.name: r for r in cluster.rows()}[name]


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie nobody reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_process_replica_of_an_in_kernel_master(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster(seed=3)
        cluster.add_node("alpha")
        cluster.make_master("alpha")
        started = cluster.spawn_node("beta", master="alpha")
        assert row(cluster, "beta").process == "starting"  # a row at once
        beta = await started
        assert isinstance(beta, hakit.NodeProcess) and beta.pid != os.getpid()
        assert cluster.processes == {"beta": beta}
        # alpha now also listens on TCP loopback, where the process attached
        assert any(a.startswith("127.0.0.1:") for a in row(cluster, "alpha").address.split(", "))
        await cluster.wait_until(lambda: row(cluster, "beta").connection == "streaming", 30)

        result = await cluster.write("greeting", "hello")
        assert result.acked == ("beta",)
        await cluster.wait_until(lambda: row(cluster, "beta").txid == 1, 10)
        beta_row = row(cluster, "beta")
        assert (beta_row.role, beta_row.master, beta_row.lag) == ("replica", "alpha", 0)
        assert (beta_row.pid, beta_row.process, beta_row.address) == (
            beta.pid,
            "running",
            beta.address,
        )
        assert (await call(beta, "get", key="greeting"))["value"] == "hello"

        # The dashboard shows it beside the in-kernel node, marked as a process.
        board = ClusterDashboard(cluster)
        assert f"pid {beta.pid}" in board.table.value
        graph = {n["name"]: n for n in board.topology.graph["nodes"]}
        assert graph["beta"]["process"] == "running" and graph["alpha"]["process"] is None
        assert {
            (lk["replica"], lk["master"], lk["state"]) for lk in board.topology.graph["links"]
        } == {("beta", "alpha", "streaming")}
        assert board.process_row.layout.display == ""
        assert board.process_pick.options == ("beta",)

        # Pause (SIGSTOP) from the dashboard: beta cannot acknowledge, so a sync write waits
        # synch_timeout for it and detaches it; its row says paused.
        board.process_pick.value = "beta"
        board.pause_button.click()
        assert beta.paused and row(cluster, "beta").process == "paused"
        assert "paused" in table_html(cluster.rows())
        result = await cluster.write("while paused", 1)
        assert (result.acked, result.detached) == ((), ("beta",))
        cluster.resume("beta")  # SIGCONT: it answers again
        assert not beta.paused
        await cluster.wait_until(lambda: cluster._processes["beta"].answered, 10)
        assert row(cluster, "beta").process == "running"
        kinds = [(e.node, e.kind) for e in cluster.log]
        assert ("beta", "paused") in kinds and ("beta", "resumed") in kinds

        # An in-kernel node cannot be paused or killed as a process.
        with pytest.raises(hj.NotebookError, match="runs in this kernel"):
            cluster.pause("alpha")
        with pytest.raises(hj.NotebookError, match="is already a node of this kernel"):
            cluster.spawn_node("alpha")
        with pytest.raises(hj.NotebookError, match="node process beta is running"):
            cluster.spawn_node("beta")
        with pytest.raises(hj.NotebookError, match="is a node process"):
            cluster.attach("beta", "alpha")  # it attached when spawned
        with pytest.raises(hakit.HakitError, match=r"cannot accept writes|is not a master"):
            await cluster.write("k", "v", node="beta")  # through its control service: refused
            # (a replica, or re-attaching after the pause: not a master either way)

    aio(main, clock=False)


def test_an_in_kernel_replica_of_a_process_master_killed_and_cleaned_up(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster(seed=4)
        pm = await cluster.spawn_node("pm")  # no master: a master process
        cluster.add_node("gamma")
        attach = cluster.attach("gamma", "pm")  # an in-kernel node attaches over TCP
        await cluster.wait_synced("gamma")
        done = await call(pm, "put", key="x", value=1)
        assert done["acked"] == ["gamma"]
        assert cluster["gamma"].get("x") == 1
        await cluster.wait_until(lambda: row(cluster, "pm").txid == 1, 10)  # its polled status
        gamma_row = row(cluster, "gamma")
        assert (gamma_row.master, gamma_row.connection, gamma_row.lag) == ("pm", "streaming", 0)
        assert row(cluster, "pm").role == "master"
        # With no master in the kernel, the write twin (and the dashboard's Write) goes to it.
        result = await cluster.write("y", 2)
        assert (result.txid, result.generation, result.acked) == (2, 1, ("gamma",))
        assert cluster["gamma"].get("y") == 2
        with pytest.raises(hj.NotebookError, match="is a node process"):
            cluster.force_master("gamma")
        # the process master became master: its own journal says so in the stop log
        await cluster.wait_until(
            lambda: ("pm", "became master") in [(e.node, e.kind) for e in cluster.log], 10
        )

        # A second process replicates from the first one.
        delta = await cluster.spawn_node("delta", master="pm")
        await cluster.wait_until(lambda: row(cluster, "delta").connection == "streaming", 30)
        assert row(cluster, "delta").master == "pm"

        # kill -9 from the dashboard: the process dies at once; gamma sees its link drop.
        board = ClusterDashboard(cluster)
        board.process_pick.value = "pm"
        board.kill_button.click()
        assert pm.returncode == -signal.SIGKILL
        reason = await attach
        assert reason is hakit.StopReason.CONNECTION_ABORTED
        pm_row = row(cluster, "pm")
        assert (pm_row.role, pm_row.process) == ("down", "killed (SIGKILL)")
        node = {n["name"]: n for n in topology_graph(cluster.rows())["nodes"]}["pm"]
        assert node["process"] == "killed (SIGKILL)"
        assert "killed (SIGKILL)" in table_html(cluster.rows())
        assert ("pm", "killed") in [(e.node, e.kind) for e in cluster.log]
        with pytest.raises(hj.NotebookError, match="pm is killed"):
            cluster.pause("pm")

        # The processes end with the cluster: none is left behind.
        pids = [p.pid for p in cluster.processes.values()]
        assert len(pids) == 2 and delta.running
        cluster.close()
        assert all(gone(pid) for pid in pids)
        assert not delta.running

    aio(main, clock=False)


def test_a_killed_process_restarts_on_its_file(aio, tmp_path: Path) -> None:
    async def main() -> None:
        cluster = hj.open_cluster(seed=5)
        cluster.add_node("alpha")
        cluster.make_master("alpha")
        db = tmp_path / "beta.db"
        await cluster.spawn_node("beta", master="alpha", sqlite=db)
        await cluster.wait_until(lambda: row(cluster, "beta").connection == "streaming", 30)
        await cluster.write("a", 1)
        cluster.kill("beta")
        await cluster.wait_until(lambda: "beta" not in cluster["alpha"].replicas, 10)
        await cluster.write("b", 2)  # beta misses this one
        beta = await cluster.spawn_node("beta", master="alpha", sqlite=db)
        await cluster.wait_until(lambda: row(cluster, "beta").connection == "streaming", 30)
        assert row(cluster, "beta").sync == "incremental"
        assert (await call(beta, "get", key="b"))["value"] == 2
        assert [r.name for r in cluster.rows()] == ["alpha", "beta"]  # one row, the new one

    aio(main, clock=False)
