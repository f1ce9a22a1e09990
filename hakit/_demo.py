"""``python -m hakit demo``: three nodes on TCP loopback in one process, narrated."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from ._runtime._cancel import cancel
from ._runtime._channels import EID_MASTER, ChannelMessage, Handler
from ._runtime._events import Event
from ._runtime._node import Node, open_node
from ._runtime._params import MasterParams, ReplicaMode, ReplicaParams, TransactionRecord
from .protocol import HAProtocolError, StopReason

_BOLD, _DIM, _GREEN, _YELLOW, _CYAN, _RESET = (
    "\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[36m", "\033[0m"
)  # fmt: skip


class Narrator:
    """Prints the demo's story; plain text when the output is not a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.color = out.isatty()
        self.reasons: dict[StopReason, str] = {}
        self._step = 0

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text

    def step(self, title: str) -> None:
        self._step += 1
        print(f"\n{self._c(_BOLD, f'{self._step}. {title}')}", file=self.out)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def event(self, event: Event) -> None:
        print(self._c(_DIM, f"     [{event.node}] {event.describe()}"), file=self.out)

    def stopped(self, node: str, reason: StopReason, how: str = "attach_master returned") -> None:
        self.reasons.setdefault(reason, node)
        print(
            f"   {self._c(_YELLOW, f'{node}: {how} {reason.name} ({int(reason)})')}"
            f" - {reason.describe()}",
            file=self.out,
        )

    def summary(self) -> None:
        self.step("Every stop reason, as the demo produced it")
        for reason in StopReason:
            node = self.reasons.get(reason)
            mark = self._c(_GREEN, "seen on " + node) if node else "not produced"
            print(f"   {int(reason)} {reason.name:<28} {mark}", file=self.out)
            print(f"     {reason.describe()}", file=self.out)


async def _replica(
    nursery: trio.Nursery,
    node: Node,
    address: str,
    narrator: Narrator,
    params: ReplicaParams | None = None,
) -> trio.Event:
    """Run attach_master in the background; narrate its stop reason when it returns."""
    done = trio.Event()

    async def run() -> None:
        try:
            reason = await node.attach_master(address, params, timeout=5)
            narrator.stopped(node.name, reason)
        finally:
            done.set()

    nursery.start_soon(run)
    return done


async def _show_new_events(nodes: Sequence[Node], seen: dict[str, int], narrator: Narrator) -> None:
    """Print the events every node logged since the last call, merged in time order."""
    await trio.sleep(0.05)  # let the links settle so the events read in order
    fresh: list[Event] = []
    for node in nodes:
        events = list(node.events)
        fresh.extend(events[seen.get(node.name, 0) :])
        seen[node.name] = len(events)
    for event in sorted(fresh, key=lambda event: event.time):  # stable: per-node order kept
        narrator.event(event)


def _answer_as(node: Node) -> Handler:
    """The demo's message handler: answer a request for a key with its value, and who read it."""

    async def handler(msg: ChannelMessage) -> None:
        if msg.need_response:
            key = msg.parts[0].decode() if msg.parts else ""
            await msg.respond(
                f"{node.name} ({node.role.value}, txid {node.txid}) tells {msg.sender}: "
                f"{key} = {node.get(key)}"
            )

    return handler


async def demo(out: TextIO = sys.stdout) -> None:
    """Three nodes on real TCP (127.0.0.1) in one process, narrated in the terminal."""
    n = Narrator(out)
    seen: dict[str, int] = {}
    async with (
        open_node("alpha", address="127.0.0.1:0") as alpha,
        open_node("beta", address="127.0.0.1:0") as beta,
        open_node("gamma", address="127.0.0.1:0") as gamma,
        trio.open_nursery() as nursery,
    ):
        nodes = [alpha, beta, gamma]
        for node in nodes:
            node.set_msg_dispatch(_answer_as(node))

        async def show() -> None:
            await _show_new_events(nodes, seen, n)

        n.step("Three nodes listen on TCP loopback")
        for node in nodes:
            n.say(f"{node.name:<6} at {node.address}")
        async with alpha.transaction() as tx:
            for i in range(1000):
                tx.put(f"user:{i}", {"id": i, "name": f"user {i}"})
        n.say(f"alpha holds {len(alpha.storage)} keys (txid {alpha.txid}) before replication")

        n.step("alpha becomes the master; beta attaches (full load)")
        alpha.set_master_params(MasterParams())
        beta_done = await _replica(nursery, beta, _addr(alpha), n)
        info = await alpha.attach_replica(timeout=5)
        n.say(f"beta attached: sync={info.sync}, txid={info.txid}, keys={len(beta.storage)}")
        await show()

        n.step("beta stops, then re-attaches: its database is equal, nothing to load")
        beta.replica_stop()
        await beta_done.wait()
        beta_done = await _replica(nursery, beta, _addr(alpha), n)
        info = await alpha.attach_replica(timeout=5)
        n.say(f"beta attached again: sync={info.sync}")
        gamma_done = await _replica(nursery, gamma, _addr(alpha), n)
        info = await alpha.attach_replica(timeout=5)
        n.say(f"gamma attached: sync={info.sync}, keys={len(gamma.storage)}")
        await show()

        n.step("Writes replicate (synchronous commit: both replicas acknowledge)")
        for i in range(3):
            async with alpha.transaction() as tx:
                tx.put(f"order:{i}", {"amount": 10 * (i + 1)})
            assert tx.result is not None
            n.say(f"txid {tx.result.txid} acknowledged by {', '.join(tx.result.acked)}")
        n.say(f"beta sees order:2 = {beta.get('order:2')}, gamma sees {gamma.get('order:2')}")
        try:
            async with gamma.transaction() as tx:
                tx.put("order:x", 0)
        except Exception as exc:
            n.say(f"a write on gamma is refused: {type(exc).__name__}: {exc}")

        n.step(
            "gamma is stopped; alpha writes on; gamma comes back and replays only what it missed"
        )
        gamma.replica_stop()
        await gamma_done.wait()
        async with alpha.transaction() as tx:
            tx.put("order:3", {"amount": 40})
        gamma_done = await _replica(nursery, gamma, _addr(alpha), n)
        info = await alpha.attach_replica(timeout=5)
        n.say(f"gamma attached again: sync={info.sync}, txid={info.txid}")
        await show()

        n.step("beta is forced to master: it catches up, sends KILL_MASTER, takes over")
        beta.cancel()
        await beta_done.wait()
        started = trio.current_time()
        force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
        reason = await beta.attach_master(_addr(alpha), force, timeout=5)
        n.stopped("beta", reason)
        n.say(f"handover took {1000 * (trio.current_time() - started):.1f} ms; "
              f"beta is {beta.role.value}, generation {beta.generation}")  # fmt: skip
        n.say(f"alpha is now {alpha.role.value} and refuses writes")
        while "gamma" not in beta.replicas:  # noqa: ASYNC110 - a demo may simply poll
            await trio.sleep(0.01)
        async with beta.transaction() as tx:
            tx.put("order:4", {"amount": 50})
        assert tx.result is not None
        n.say(f"gamma followed beta; txid {tx.result.txid} acknowledged by {tx.result.acked}")
        await show()

        n.step("gamma sends a request on its master channel (EID_MASTER): beta answers now")
        answer = await gamma.channel(EID_MASTER).send_request("order:4")
        n.say(f"gamma asked the master for order:4 and got: {answer.decode()}")
        await show()

        n.step("A node from another cluster tries to attach: the handshake fails")
        async with open_node("intruder", cluster_name="elsewhere") as intruder:
            try:
                await intruder.attach_master(_addr(beta), timeout=5)
            except HAProtocolError as exc:
                n.stopped("intruder", exc.stop_reason, "attach_master raised HAProtocolError:")
                n.say(str(exc))

        n.step("beta detaches gamma; gamma re-attaches with a callback that rejects a value")
        beta.detach_replica("gamma")
        await gamma_done.wait()

        def audit(record: TransactionRecord) -> None:
            for op in record.ops:
                if op[1] == "order:bad":
                    raise ValueError("negative amount")

        gamma_done = await _replica(
            nursery, gamma, _addr(beta), n, ReplicaParams(on_transaction=audit)
        )
        await beta.attach_replica(timeout=5)
        async with beta.transaction() as tx:
            tx.put("order:bad", {"amount": -1})
        await gamma_done.wait()

        n.step("gamma re-attaches with a cancel point; another party cancels it")
        async with open_node("probe", address="127.0.0.1:0") as probe:
            cancel_address = _addr(probe)
        params = ReplicaParams(mode=ReplicaMode.ALLOW_CANCEL, cancel_address=cancel_address)
        gamma_done = await _replica(nursery, gamma, _addr(beta), n, params)
        await beta.attach_replica(timeout=5)
        await cancel(cancel_address, timeout=5)
        await gamma_done.wait()

        n.step("gamma attaches once more; the master beta goes away")
        gamma_done = await _replica(nursery, gamma, _addr(beta), n)
        await beta.attach_replica(timeout=5)
        await beta.aclose()
        await gamma_done.wait()
        await show()
        n.summary()


def _addr(node: Node) -> str:
    assert node.address is not None
    return node.address
