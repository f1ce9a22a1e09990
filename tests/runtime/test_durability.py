"""A node on SqliteStorage keeps txid, generation and data across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterParams, ReplicaMode, ReplicaParams, SqliteStorage, StopReason

from .conftest import commit, run_attach, wait_until


async def test_master_restart_resumes_without_reload(
    autojump_clock: MockClock, tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "m.db"
    async with hakit.open_cluster(seed=3) as cluster:
        replica = await cluster.add_node("r1")
        master = await cluster.add_node("m", storage=SqliteStorage(path))
        master.set_master_params(MasterParams())
        run = run_attach(nursery, replica, "mem:m")
        await master.attach_replica(timeout=5)
        for i in range(10):
            await commit(master, **{f"k{i}": i})
        await master.aclose()
        assert await run.wait() is StopReason.CONNECTION_ABORTED

        restarted = hakit.Node("m", storage=SqliteStorage(path), network=cluster.network)
        await nursery.start(restarted._main)
        await restarted.listen("mem:m")
        assert (restarted.txid, restarted.generation) == (10, 1)
        assert restarted.get("k9") == 9
        restarted.set_master_params(MasterParams())
        assert restarted.generation == 2
        run = run_attach(nursery, replica, "mem:m")
        info = await restarted.attach_replica(timeout=5)
        assert info.sync == "equal"  # same history, same txid: nothing to load
        assert (await commit(restarted, after=1)).acked == ("r1",)
        await restarted.aclose()


async def test_killed_master_stays_fenced_after_restart(
    autojump_clock: MockClock, tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "old.db"
    async with hakit.open_cluster(seed=4) as cluster:
        old = await cluster.add_node("old", storage=SqliteStorage(path))
        old.set_master_params(MasterParams())
        await commit(old, a=1)
        new = await cluster.add_node("new")
        run = run_attach(nursery, new, "mem:old", ReplicaParams(mode=ReplicaMode.FORCE_MASTER))
        assert await run.wait() is StopReason.BECOMES_MASTER
        await wait_until(lambda: old.role is hakit.Role.STANDALONE)
        await old.aclose()

        again = hakit.Node("old", storage=SqliteStorage(path), network=cluster.network)
        await nursery.start(again._main)
        assert again.generation == new.generation == 2
        with pytest.raises(hakit.NotMasterError):
            await commit(again, stale=1)
        assert again.txid == 1
        # Following the new master is the way back in.
        await again.listen("mem:old")
        run = run_attach(nursery, again, "mem:new")
        await new.attach_replica(timeout=5)
        await commit(new, b=2)
        assert again.get("b") == 2
        await again.aclose()
