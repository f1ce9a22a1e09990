"""hakit scenarios: the master runs in this process, every replica in its own process.

All links are TCP on 127.0.0.1. Each transaction is one
``async with master.transaction() as tx: tx.put(f"k{i}", b"x" * 100)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

import hakit
from hakit import MasterMode, MasterParams

from . import _proc
from ._ceiling import KEYSPACE, VALUE, Config
from ._load import repetitions
from ._util import Figure, latency_us, log, now, spin_until

#: Transactions per full-sync build step (building the master's database is not timed).
BUILD_BATCH = 10_000


@dataclass
class Attached:
    info: hakit.ReplicaInfo
    t0: float  #: the replica process called attach_master (perf_counter, system-wide)
    t_end: float  #: the master's attach_replica returned


async def attach(master: hakit.Node, replica: _proc.Child, timeout: float = 120.0) -> Attached:
    """Have `replica` attach to `master`; return when the master counts it as synced."""
    result: dict[str, Any] = {}
    waiting = trio.Event()

    async def wait() -> None:
        waiting.set()  # attach_replica registers before its first checkpoint
        result["info"] = await master.attach_replica(timeout=timeout)
        result["t_end"] = now()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await waiting.wait()
        await replica.send("ATTACH", master.address)
        attaching = await replica.expect("attaching")
    return Attached(result["info"], attaching["t0"], result["t_end"])


async def _wait_detached(master: hakit.Node) -> None:
    """Wait until the master dropped every link (polled: hakit offers no event for it)."""
    with trio.fail_after(10):
        while master.replicas:  # noqa: ASYNC110
            await trio.sleep(0.001)


async def _wait_applied(master: hakit.Node, replicas: int) -> None:
    """Poll (0.5 ms) until every replica acknowledged the master's last txid."""
    last = master.txid
    while True:
        links = master.statistics().replicas
        if len(links) != replicas:
            raise RuntimeError(f"a replica was detached: {links}")
        if all(link.acked_txid >= last for link in links):
            return
        await trio.sleep(0.0005)


# -- async commit ------------------------------------------------------------------------------
async def _async_run(master: hakit.Node, replicas: int, duration: float) -> tuple[float, float]:
    i = master.txid
    t0 = now()
    deadline = t0 + duration
    value = VALUE
    while True:
        for _ in range(256):
            i += 1
            async with master.transaction() as tx:
                tx.put(f"k{i % KEYSPACE}", value)
        if now() >= deadline:
            break
    t_committed = now()
    await _wait_applied(master, replicas)
    t_applied = now()
    return t_committed - t0, t_applied - t0


async def async_commit(cfg: Config, replicas: int = 2) -> Figure:
    """Async commit to `replicas` replica processes, timed until every replica acked."""
    fig = Figure("txn/s", extra={"replicas": replicas})
    mode = MasterMode.ASYNC | MasterMode.HOTSYNC | MasterMode.STATEFUL
    async with hakit.open_node("master", address="127.0.0.1:0") as master:
        master.set_master_params(MasterParams(mode=mode))
        names = [[f"r{k + 1}"] for k in range(replicas)]
        async with _proc.children("replica", names) as procs:
            for proc in procs:
                await attach(master, proc)
            await _async_run(master, replicas, cfg.warmup)
            async for _ in repetitions(fig, cfg.reps):
                first = master.txid
                committed, applied = await _async_run(master, replicas, cfg.duration)
                count = master.txid - first
                fig.add(count / applied, commit_return_rate=count / committed)
            fig.extra["verified"] = await _verify(master, procs)
    log(f"hakit async x{replicas}: {fig.median:,.0f} txn/s applied {fig.samples}")
    return fig


async def _verify(master: hakit.Node, procs: list[_proc.Child]) -> bool:
    """Every replica holds the master's txid and key count."""
    for proc in procs:
        await proc.send("STATS")
        stats = await proc.expect("stats")
        if stats["txid"] != master.txid or stats["keys"] != len(master.storage):
            log(f"verification failed: {proc} {stats} vs master txid {master.txid}")
            return False
    return True


# -- sync commit -------------------------------------------------------------------------------
async def _writers(
    master: hakit.Node, writers: int, duration: float, lat: list[float]
) -> tuple[float, int]:
    """`writers` tasks commit until the deadline; return (commits/s, commits not acked)."""
    counts = [0] * writers
    unacked = 0
    t0 = now()
    deadline = t0 + duration
    value = VALUE

    async def writer(w: int) -> None:
        nonlocal unacked
        n = 0
        key_base = w * KEYSPACE
        while True:
            t = now()
            async with master.transaction() as tx:
                tx.put(f"k{key_base + n % KEYSPACE}", value)
            t1 = now()
            lat.append(t1 - t)
            n += 1
            if not tx.result.acked:
                unacked += 1
            if t1 >= deadline:
                break
        counts[w] = n

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    return sum(counts) / (now() - t0), unacked


async def sync_commit(cfg: Config, writer_counts: tuple[int, ...] = (1, 16)) -> dict[int, Figure]:
    """Sync commit (default MasterParams, ack_policy ALL) to one replica process."""
    figs: dict[int, Figure] = {}
    async with hakit.open_node("master", address="127.0.0.1:0") as master:
        master.set_master_params(MasterParams())
        async with _proc.child("replica", "s1") as proc:
            await attach(master, proc)
            for writers in writer_counts:
                fig = Figure("txn/s", extra={"writers": writers})
                await _writers(master, writers, cfg.warmup, [])
                unacked = 0
                async for _ in repetitions(fig, cfg.reps):
                    lat: list[float] = []
                    rate, missing = await _writers(master, writers, cfg.duration, lat)
                    unacked += missing
                    fig.add(rate, **latency_us(lat))
                fig.extra["unacked_commits"] = unacked
                figs[writers] = fig
                log(
                    f"hakit sync {writers} writer(s): {fig.median:,.0f} txn/s "
                    f"p50 {fig.side('p50_us'):.0f} us {fig.samples}"
                )
            figs[writer_counts[-1]].extra["verified"] = await _verify(master, [proc])
    return figs


# -- full initial sync -------------------------------------------------------------------------
async def build_master(master: hakit.Node, keys: int) -> None:
    """Fill the master with `keys` keys (``k<i>`` -> 100 bytes) in batches; not timed."""
    for base in range(0, keys, BUILD_BATCH):
        async with master.transaction() as tx:
            for i in range(base, min(keys, base + BUILD_BATCH)):
                tx.put(f"k{i}", VALUE)


async def initial_sync(cfg: Config) -> Figure:
    """Full sync of `cfg.snapshot_keys` keys to a fresh, empty replica process.

    Timed from the replica process calling ``attach_master`` (process started, hakit
    imported, node open; the clock includes connect and handshake) until the master's
    ``attach_replica`` returns, i.e. the master received the replica's acknowledgement of
    the snapshot txid after the replica committed the loaded database.
    """
    keys = cfg.snapshot_keys
    fig = Figure("s", extra={"keys": keys})
    verified = True
    async with hakit.open_node("master", address="127.0.0.1:0") as master:
        t = now()
        await build_master(master, keys)
        master.set_master_params(MasterParams())
        log(f"hakit initial sync: built {keys:,} keys in {now() - t:.2f} s (not timed)")
        attempt = 0

        async def once() -> tuple[float, dict[str, float]]:
            nonlocal attempt, verified
            attempt += 1
            name = f"f{attempt}"
            side: dict[str, float] = {}
            async with _proc.child("replica", name) as proc:
                res = await attach(master, proc)
                await proc.send("STATS")
                stats = await proc.expect("stats")
                verified = verified and stats["keys"] == keys and stats["txid"] == master.txid
                loaded = stats["times"].get("db_load_ok")
                if loaded is not None:
                    side["replica_db_load_ok_s"] = loaded - res.t0
                # Both are the master's trio clock (same process), so they subtract.
                connected = [
                    e.time
                    for e in master.events
                    if isinstance(e, hakit.Connected) and e.peer == name
                ]
                synced = [
                    e.time
                    for e in master.events
                    if isinstance(e, hakit.ReplicaSynced) and e.replica == name
                ]
                if connected and synced:
                    side["master_connected_to_synced_s"] = synced[-1] - connected[-1]
            await _wait_detached(master)
            return res.t_end - res.t0, side

        await once()  # warm-up
        async for _ in repetitions(fig, cfg.reps):
            value, side = await once()
            fig.add(value, **side)
    fig.extra["keys_per_s"] = keys / fig.median
    fig.extra["verified"] = verified
    log(f"hakit initial sync {keys:,} keys: {fig.median:.3f} s {fig.samples}")
    return fig


# -- force master ------------------------------------------------------------------------------
async def force_master(cfg: Config, keys: int = 1000) -> Figure:
    """Handover: a caught-up replica re-attaches with FORCE_MASTER on an equal database.

    Timed inside the replica process, from calling ``attach_master(FORCE_MASTER)`` until
    its first write transaction as the new master has committed. Both processes spin until
    the same start instant, so neither runs on a cold vCPU.
    """
    fig = Figure("ms", extra={"keys": keys})
    ok = True
    attempt = 0

    async def once() -> tuple[float, float]:
        nonlocal attempt, ok
        attempt += 1
        async with hakit.open_node(f"old{attempt}", address="127.0.0.1:0") as master:
            await build_master(master, keys)
            master.set_master_params(MasterParams())
            async with _proc.child("replica", f"new{attempt}") as proc:
                await attach(master, proc)
                for i in range(10):  # a few acknowledged writes: the replica is caught up
                    async with master.transaction() as tx:
                        tx.put(f"k{i}", b"y" * 100)
                await proc.send("STOP")
                stopped = await proc.expect("stopped")
                if stopped["reason"] != "STOPPED_BY_LOCAL_REQUEST":
                    raise RuntimeError(f"replica stopped with {stopped}")
                await _wait_detached(master)
                deadline = now() + 0.2
                await proc.send("FORCE", master.address, deadline)
                spin_until(deadline)
                report = await proc.expect("force")
                ok = ok and report["reason"] == "BECOMES_MASTER" and report["role"] == "master"
                ok = ok and master.role is hakit.Role.STANDALONE
        total = (report["t_write"] - report["t0"]) * 1e3
        return total, (report["t_promoted"] - report["t0"]) * 1e3

    await once()  # warm-up
    async for _ in repetitions(fig, cfg.handover_reps):
        total, promoted = await once()
        fig.add(total, attach_returned_ms=promoted)
    fig.extra["verified"] = ok
    log(f"hakit force master: {fig.median:.3f} ms to first write {fig.samples}")
    return fig
