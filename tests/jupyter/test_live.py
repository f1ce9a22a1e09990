"""The live cluster's twins on an asyncio host loop (DESIGN 6.2)."""

from __future__ import annotations

import ast
import asyncio

import pytest
import trio

import hakit
import hakit.jupyter as hj
from hakit.jupyter._bridge import BridgeTransformer

from .conftest import demo_cluster


def test_the_design_example(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        alpha, beta, gamma = (cluster[n] for n in ("alpha", "beta", "gamma"))
        assert alpha.role is hakit.Role.MASTER and alpha.address == "mem:alpha"
        result = await cluster.write("greeting", "hello")
        assert isinstance(result, hakit.CommitResult)
        assert sorted(result.acked) == ["beta", "gamma"]
        assert beta.get("greeting") == "hello"

        reason = await cluster.force_master("gamma")
        assert reason is hakit.StopReason.BECOMES_MASTER
        assert (reason.name, reason.describe()) == ("BECOMES_MASTER", reason.describe())
        assert gamma.role is hakit.Role.MASTER and cluster.master is gamma
        assert not handles["beta"].done  # beta followed gamma and is still attached
        assert beta.statistics().master == "gamma"
        assert alpha.role is hakit.Role.STANDALONE

        async def handler(msg: hakit.ChannelMessage) -> None:
            await msg.respond(b"pong:" + msg.parts[0])

        gamma.set_msg_dispatch(handler)
        answer = await cluster.request("beta", hakit.EID_MASTER, [b"ping"], timeout=2)
        assert answer == b"pong:ping"

        cluster.partition({"gamma"}, {"alpha", "beta"})
        assert {r.name: r.connection for r in cluster.rows()}["beta"] == "cut"
        cluster.heal()
        assert {r.name: r.connection for r in cluster.rows()}["beta"] == "streaming"

        async def my_trio_function(x: int) -> int:
            await trio.sleep(1)
            return x * 2

        assert await hj.run(my_trio_function, 21) == 42
        h = hj.start_soon(my_trio_function, 2)
        assert not h.done
        assert await h == 4 and h.done and h.result() == 4

        # The stop-reason log tells the story, in order.
        kinds = [(e.node, e.kind, e.reason) for e in cluster.log]
        assert ("gamma", "stopped", hakit.StopReason.STOPPED_BY_LOCAL_REQUEST) in kinds
        assert ("gamma", "stopped", hakit.StopReason.BECOMES_MASTER) in kinds
        assert ("alpha", "stepped down", None) in kinds
        assert ("beta", "followed", None) in kinds
        assert kinds.index(("gamma", "stopped", hakit.StopReason.BECOMES_MASTER)) > kinds.index(
            ("gamma", "stopped", hakit.StopReason.STOPPED_BY_LOCAL_REQUEST)
        )
        entry = next(e for e in cluster.log if e.reason is hakit.StopReason.BECOMES_MASTER)
        assert entry.explanation == hakit.StopReason.BECOMES_MASTER.describe()

    aio(main)


def test_stop_cancel_and_detach_resolve_their_attach_handles(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        stopped = cluster.replica_stop("beta")
        assert stopped is handles["beta"]
        assert await stopped is hakit.StopReason.STOPPED_BY_LOCAL_REQUEST
        assert "STOPPED_BY_LOCAL_REQUEST (3)" in repr(stopped)
        assert "its own application" in stopped._repr_html_()

        assert await cluster.cancel("gamma") is hakit.StopReason.CANCELLED
        # Read at once, before the watcher's next look: the log already has the stop.
        assert next(
            (e.node, e.kind, e.reason) for e in reversed(cluster.log) if e.kind == "stopped"
        ) == ("gamma", "stopped", hakit.StopReason.CANCELLED)

        again = cluster.attach("beta", "alpha")
        await cluster.wait_synced("beta")
        assert cluster.attach_handle("beta") is again
        detached = cluster.detach("beta")
        assert detached is again
        assert await detached is hakit.StopReason.MASTER_REQUESTED_DISCONNECT
        with pytest.raises(hj.NotebookError, match="no master has a replica"):
            cluster.detach("beta")

    aio(main)


def test_force_master_from_an_unattached_node_and_with_attach(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        await cluster.write("k", "v")
        cluster.add_node("delta")
        forced = cluster.attach("delta", "alpha", force_master=True)
        assert "force master" in forced.what
        assert await forced is hakit.StopReason.BECOMES_MASTER
        assert cluster.master is cluster["delta"]
        assert cluster["delta"].get("k") == "v"
        await cluster.wait_until(lambda: cluster["beta"].statistics().master == "delta")
        assert not handles["beta"].done and not handles["gamma"].done

    aio(main)


def test_write_delete_and_channels(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        beta = cluster["beta"]
        await cluster.write(b"raw", [1, 2])
        deleted = await cluster.delete(b"raw")
        assert deleted.txid == 2
        await cluster.wait_until(lambda: beta.txid == 2)
        assert beta.get(b"raw") is None

        got: list[list[bytes]] = []

        async def handler(msg: hakit.ChannelMessage) -> None:
            got.append(msg.parts)
            if msg.need_response:
                await msg.respond(b"a", b"b")

        cluster["gamma"].set_msg_dispatch(handler)
        await cluster.send("beta", "gamma", "hello")
        await cluster.wait_until(lambda: got == [[b"hello"]])
        assert await cluster.request("beta", "gamma", [b"q"], multiple=True) == [b"a", b"b"]
        single = cluster.request("beta", "gamma", b"q")
        with pytest.raises(hakit.BufferSmallError):
            await single
        assert "BufferSmallError" in single.summary()
        no_handler = cluster.request("gamma", "alpha", b"x", timeout=1)
        with pytest.raises(hakit.NoServerError):
            await no_handler
        assert any("NoServerError" in e.detail for e in cluster.log)

    aio(main)


def test_network_twins_and_waits(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        cluster.set_latency("alpha", {"beta", "gamma"}, 0.5, 0.1)
        assert cluster.cluster.network.latency("gamma", "alpha") == (0.5, 0.1)
        with pytest.raises(ValueError, match="latency"):
            cluster.set_latency("alpha", "beta", -1)
        cluster.set_latency("alpha", {"beta", "gamma"}, 0)
        cluster.set_loss("alpha", "beta", 0.1)
        assert cluster.cluster.network.loss("beta", "alpha") == 0.1
        cluster.set_loss("alpha", "beta", 0)
        cluster.partition("beta", "alpha")
        write = cluster.write("during", 1)
        # beta cannot ack across the cut: the commit detaches it after synch_timeout.
        result = await write
        assert result.detached == ("beta",)
        cluster.heal()
        never = cluster.wait_until(lambda: False, timeout=3)
        with pytest.raises(TimeoutError, match="still false after 3 s"):
            await never
        slow = cluster.wait_synced("beta", timeout=0.001)
        await cluster.replica_stop("gamma")
        with pytest.raises(TimeoutError, match="not synced within 1 s: gamma"):
            await cluster.wait_synced("gamma", timeout=1)
        with pytest.raises(TimeoutError):
            await slow

    aio(main)


def test_twins_fail_at_once_with_an_error_naming_what_to_do(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster()
        cluster.add_node("a")
        cluster.add_node("b")
        with pytest.raises(hakit.InvalidArgumentError, match="already has a node"):
            cluster.add_node("a")
        with pytest.raises(hj.NotebookError, match=r"nodes: a, b"):
            cluster.attach("zed", "a")
        with pytest.raises(hj.NotebookError, match="make_master"):
            cluster.write("k", 1)
        with pytest.raises(hj.NotebookError, match="make_master"):
            cluster.force_master("b")
        cluster.make_master("a")
        with pytest.raises(hj.NotebookError, match="is a master"):
            cluster.attach("a", "b")
        with pytest.raises(hj.NotebookError, match="itself"):
            cluster.attach("b", "b")
        cluster.attach("b", "a")
        with pytest.raises(hj.NotebookError, match="replica_stop"):
            cluster.attach("b", "a")
        with pytest.raises(hj.NotebookError, match="already the master"):
            cluster.force_master("a")
        with pytest.raises(hakit.LocalProtocolError, match="not attached"):
            cluster.cancel("a")

    aio(main)


def test_handle_display_states(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        running = handles["beta"]
        assert running.state == "running"
        assert "attach beta to alpha: running (streaming" in repr(running)
        assert ">running<" in running._repr_html_()
        failing = cluster.write("k", object())
        with pytest.raises(hakit.InvalidArgumentError):
            await failing
        assert failing.state == "failed" and "#cf222e" in failing._repr_html_()

    aio(main)


# -- awaiting hakit's own coroutines from a cell -------------------------------------------


async def run_cell(source: str, namespace: dict[str, object]) -> object:
    """Compile and run `source` as IPython does, with hakit's transformer applied."""
    tree = BridgeTransformer().visit(ast.parse(source))
    ast.fix_missing_locations(tree)
    code = compile(tree, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        result = await result
    return result


def test_cells_await_hakit_coroutines_through_the_bridge(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        ns: dict[str, object] = {"cluster": cluster, "hakit": hakit, "trio": trio}
        ns.update(cluster.nodes)
        await run_cell(
            "async with alpha.transaction() as tx:\n    tx.put('direct', 1)\nr = tx.result",
            ns,
        )
        assert ns["r"].txid == 1  # type: ignore[attr-defined]
        cluster.add_node("delta")
        await run_cell(
            "import trio\nawait trio.sleep(1)\n"
            "h = hj_start(lambda: delta.attach_master('mem:alpha'))",
            {**ns, "delta": cluster["delta"], "hj_start": lambda f: hj.start_soon(f)},
        )
        await cluster.wait_synced("delta")
        assert cluster["delta"].get("direct") == 1
        # Channel calls, and an inner async def stays trio code (run by hj.run).
        await run_cell(
            "async def handler(msg):\n    await msg.respond(b'ok')\n"
            "gamma.set_msg_dispatch(handler)\n"
            "ch = beta.channel('gamma')\n"
            "answer = await ch.send_request([b'x'])\n",
            ns,
        )
        assert ns["answer"] == b"ok"
        with pytest.raises(hj.NotebookError, match=r"hakit\.jupyter\.open_cluster"):
            await run_cell("async with hakit.open_cluster() as c:\n    pass", ns)
        with pytest.raises(hj.NotebookError, match=r"hj\.run|hakit\.jupyter\.run"):
            await run_cell("async with trio.open_nursery() as n:\n    pass", ns)
        # `await node.attach_master(...)` in a cell: the cell waits until the attach stops.
        cell_ns = {**ns, "epsilon": cluster.add_node("epsilon")}
        cell = asyncio.ensure_future(
            run_cell("reason = await epsilon.attach_master('mem:alpha')", cell_ns)
        )
        await cluster.wait_synced("epsilon")
        assert not cell.done()
        cluster.detach("epsilon")
        await cell
        assert cell_ns["reason"] is hakit.StopReason.MASTER_REQUESTED_DISCONNECT
        # Plain asyncio awaitables pass through unchanged.
        assert await run_cell("import asyncio\nawait asyncio.sleep(0)\nx = 5", ns) is None
        # A hakit error raised in trio comes through to the cell.
        with pytest.raises(hakit.NotMasterError):
            await run_cell("async with beta.transaction() as tx:\n    tx.put('k', 1)", ns)

    aio(main)
