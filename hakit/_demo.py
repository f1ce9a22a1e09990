"""``python -m hakit demo``: three nodes on TCP loopback in one process, narrated.

Each step does one thing, waits for what it narrates (a sync, a stop, the master noticing),
then prints the events the nodes logged meanwhile, so every event reads under its step.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable
from typing import TextIO

import trio

from ._runtime._cancel import cancel
from ._runtime._channels import EID_MASTER, ChannelMessage, Handler
from ._runtime._events import (
    ChannelConnected,
    ConnectionRefused,
    Event,
    MasterChanged,
    ReplicaDetached,
    ReplicaSynced,
)
from ._runtime._node import Node, open_node
from ._runtime._params import (
    CommitResult,
    MasterParams,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    TransactionRecord,
)
from .protocol import HAProtocolError, NotMasterError, StopReason

_BOLD, _DIM, _GREEN, _YELLOW, _CYAN, _RESET = (
    "\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[36m", "\033[0m"
)  # fmt: skip

#: Narration is wrapped to this many columns (events, one per line, are not).
_WIDTH = 92

#: The one plain sentence that explains a term, printed the first time the term appears.
_TERMS = {
    "generation": (
        "A generation numbers a master's reign: each promotion raises it by one, and nodes "
        "refuse messages from an older generation, so a deposed master cannot write on."
    ),
    "full": "A full sync copies the master's whole database to the replica, as a snapshot.",
    "equal": "An equal sync sends nothing: the replica already holds what the master holds.",
    "incremental": (
        "An incremental sync replays only the transactions the replica missed, which the "
        "master still keeps in its transaction log."
    ),
    "KILL_MASTER": (
        "KILL_MASTER is the message in which the promoted replica tells the old master to "
        "step down, naming the new generation."
    ),
}


class Narrator:
    """Prints the demo's story; plain text when the output is not a terminal.

    Args:
        out: where to print.
        slow: pause between steps and lines, to follow along in a room.
    """

    def __init__(self, out: TextIO, *, slow: bool = False) -> None:
        self.out = out
        self.color = out.isatty()
        self.slow = slow
        self.reasons: dict[StopReason, str] = {}
        self._explained: set[str] = set()
        self._step = 0
        self._events: list[Event] = []
        self._printed = 0
        self._arrived = trio.Event()

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def _pace(self, seconds: float) -> None:
        if self.slow:
            await trio.sleep(seconds)  # pacing for an audience, not waiting for the nodes

    # -- the nodes' events ---------------------------------------------------------------
    def watch(self, node: Node) -> None:
        """Collect `node`'s events, in the order they happen."""
        node.events.sink = self._collect

    def _collect(self, event: Event) -> None:
        self._events.append(event)
        self._arrived.set()
        self._arrived = trio.Event()

    async def until(self, predicate: Callable[[Event], bool]) -> None:
        """Wait until an event not yet printed satisfies `predicate`."""
        while not any(predicate(event) for event in self._events[self._printed :]):
            await self._arrived.wait()

    async def events(self) -> None:
        """Print the events logged since the last call."""
        fresh, self._printed = self._events[self._printed :], len(self._events)
        for event in fresh:
            self._print(self._c(_DIM, f"     [{event.node}] {event.describe()}"))
            await self._pace(0.15)

    # -- the story -----------------------------------------------------------------------
    async def step(self, title: str) -> None:
        await self.events()
        await self._pace(2.0)
        self._step += 1
        self._print(f"\n{self._c(_BOLD, f'{self._step}. {title}')}")

    async def say(self, text: str, color: str = "") -> None:
        lines = textwrap.wrap(text, width=_WIDTH, subsequent_indent="  ") or [""]
        for line in lines:
            self._print(f"   {self._c(color, line) if color else line}")
        await self._pace(0.5)

    async def explain(self, *terms: str) -> None:
        """Say what each term means, the first time it appears."""
        for term in terms:
            if term not in self._explained:
                self._explained.add(term)
                await self.say(_TERMS[term], _CYAN)

    async def synced(self, who: str, info: ReplicaInfo, node: Node) -> None:
        await self.say(
            f"{who} is synced ({info.sync} sync) at txid {info.txid}: {len(node.storage)} keys"
        )
        await self.explain(info.sync)

    async def acked(self, result: CommitResult) -> None:
        names = sorted(result.acked)
        by = " and ".join(names) if names else "no replica"
        await self.say(f"txid {result.txid} committed, acknowledged by {by}")

    async def stopped(self, node: str, reason: StopReason, how: str = "stopped with") -> None:
        self.reasons.setdefault(reason, node)
        self._print(f"   {self._c(_YELLOW, f'{node}: {how} {reason} ({int(reason)})')}")
        await self.say(f"  {reason.describe()}")

    async def summary(self) -> None:
        await self.step("Every stop reason, as the demo produced it")
        for reason in StopReason:
            node = self.reasons.get(reason)
            mark = self._c(_GREEN, "seen on " + node) if node else "not produced"
            self._print(f"   {int(reason)} {reason.name:<28} {mark}")
            self._print(f"     {reason.describe()}")


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


async def _attach(
    nursery: trio.Nursery, node: Node, address: str, params: ReplicaParams | None = None
) -> ReplicaInfo:
    """Attach `node` in the background; return once it is synced."""
    run = functools.partial(node.attach_master, timeout=5)
    info: ReplicaInfo = await nursery.start(run, address, params)
    return info


def _detached(master: str, replica: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, ReplicaDetached) and (e.node, e.replica) == (master, replica)


def _master_saw_sync(master: str, replica: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, ReplicaSynced) and (e.node, e.replica) == (master, replica)


async def demo(out: TextIO = sys.stdout, *, slow: bool = False) -> None:
    """Three nodes on real TCP (127.0.0.1) in one process, narrated in the terminal.

    Args:
        out: where to print.
        slow: pace the story for a room (pauses between steps and lines).
    """
    n = Narrator(out, slow=slow)
    async with (
        open_node("alpha", address="127.0.0.1:0") as alpha,
        open_node("beta", address="127.0.0.1:0") as beta,
        open_node("gamma", address="127.0.0.1:0") as gamma,
        trio.open_nursery() as nursery,
    ):
        nodes = [alpha, beta, gamma]
        for node in nodes:
            n.watch(node)
            node.set_msg_dispatch(_answer_as(node))

        await n.step("Three nodes listen on TCP loopback")
        for node in nodes:
            await n.say(f"{node.name:<6} at {node.address}")
        async with alpha.transaction() as tx:
            for i in range(1000):
                tx.put(f"user:{i}", {"id": i, "name": f"user {i}"})
        await n.say(f"alpha holds {len(alpha.storage)} keys (txid {alpha.txid}) before replication")

        await n.step("alpha becomes the master; beta attaches to it")
        alpha.set_master_params(MasterParams())
        await n.say(f"alpha is the master, in generation {alpha.generation}")
        await n.explain("generation")
        await n.synced("beta", await _attach(nursery, beta, _addr(alpha)), beta)
        await n.until(_master_saw_sync("alpha", "beta"))

        await n.step("beta stops, then attaches again: its database is equal, nothing to load")
        beta.replica_stop()
        await n.stopped("beta", await _stopped(beta))
        await n.until(_detached("alpha", "beta"))
        await n.synced("beta", await _attach(nursery, beta, _addr(alpha)), beta)
        await n.synced("gamma", await _attach(nursery, gamma, _addr(alpha)), gamma)
        await n.until(_master_saw_sync("alpha", "gamma"))

        await n.step("Writes replicate (synchronous commit: each waits for both replicas)")
        for i in range(3):
            async with alpha.transaction() as tx:
                tx.put(f"order:{i}", {"amount": 10 * (i + 1)})
            await n.acked(tx.result)
        await n.say(f"beta sees order:2 = {beta.get('order:2')}, gamma sees {gamma.get('order:2')}")
        try:
            async with gamma.transaction() as tx:
                tx.put("order:x", 0)
        except NotMasterError as exc:
            await n.say(f"a write on gamma is refused: NotMasterError: {exc}")

        await n.step("gamma stops; alpha writes on; gamma comes back and replays what it missed")
        gamma.replica_stop()
        await n.stopped("gamma", await _stopped(gamma))
        await n.until(_detached("alpha", "gamma"))
        async with alpha.transaction() as tx:
            tx.put("order:3", {"amount": 40})
        await n.acked(tx.result)
        await n.synced("gamma", await _attach(nursery, gamma, _addr(alpha)), gamma)

        await n.step("beta is forced to master: it catches up, sends KILL_MASTER, takes over")
        await n.say(
            "beta is still attached as an ordinary replica, and a node runs one attach at a "
            "time: so we cancel that attach first, then attach again with FORCE_MASTER."
        )
        beta.cancel()
        await n.stopped("beta", await _stopped(beta))
        started = trio.current_time()
        force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
        reason = await beta.attach_master(_addr(alpha), force, timeout=5)
        await n.stopped("beta", reason, "attach_master returned")
        await n.explain("KILL_MASTER")
        await n.say(f"handover took {1000 * (trio.current_time() - started):.1f} ms; "
                    f"beta is {beta.role.value}, generation {beta.generation}")  # fmt: skip
        await n.say(f"alpha is now {alpha.role.value} and refuses writes")
        # gamma follows the new master by itself, without its attach_master returning.
        info = await beta.attach_replica(timeout=5)
        await n.say(f"gamma followed beta ({info.sync} sync at txid {info.txid})")
        async with beta.transaction() as tx:
            tx.put("order:4", {"amount": 50})
        await n.acked(tx.result)
        await n.until(lambda e: isinstance(e, MasterChanged) and e.node == "gamma")

        await n.step("gamma sends a request on its master channel (EID_MASTER): beta answers now")
        answer = await gamma.channel(EID_MASTER).send_request("order:4")
        await n.say(f"gamma asked the master for order:4 and got: {answer.decode()}")
        await n.until(lambda e: isinstance(e, ChannelConnected) and e.node == "beta")

        await n.step("A node from another cluster tries to attach: the handshake fails")
        async with open_node("intruder", cluster_name="elsewhere") as intruder:
            try:
                await intruder.attach_master(_addr(beta), timeout=5)
            except HAProtocolError as exc:
                await n.stopped("intruder", exc.stop_reason, "attach_master raised")
                await n.say(str(exc))
        await n.until(lambda e: isinstance(e, ConnectionRefused) and e.node == "beta")

        await n.step("beta detaches gamma; gamma attaches again, with a callback that rejects")
        beta.detach_replica("gamma")
        await n.stopped("gamma", await _stopped(gamma))

        def audit(record: TransactionRecord) -> None:
            for op in record.ops:
                if op[1] == "order:bad":
                    raise ValueError("negative amount")

        await _attach(nursery, gamma, _addr(beta), ReplicaParams(on_transaction=audit))
        async with beta.transaction() as tx:
            tx.put("order:bad", {"amount": -1})
        await n.stopped("gamma", await _stopped(gamma))
        await n.until(_detached("beta", "gamma"))

        await n.step("gamma attaches with a cancel point; another party cancels it")
        async with open_node("probe", address="127.0.0.1:0") as probe:
            cancel_address = _addr(probe)  # a free port, for gamma's cancel point
        params = ReplicaParams(mode=ReplicaMode.ALLOW_CANCEL, cancel_address=cancel_address)
        await _attach(nursery, gamma, _addr(beta), params)
        await n.say(f"gamma listens for cancel requests at {cancel_address}")
        await cancel(cancel_address, timeout=5)
        await n.stopped("gamma", await _stopped(gamma))
        await n.until(_detached("beta", "gamma"))

        await n.step("gamma attaches once more; then the master beta goes away")
        await _attach(nursery, gamma, _addr(beta))
        await n.until(_master_saw_sync("beta", "gamma"))
        await beta.aclose()
        await n.stopped("gamma", await _stopped(gamma))
        await n.summary()


async def _stopped(node: Node) -> StopReason:
    reason = await node.wait_stopped()
    assert reason is not None
    return reason


def _addr(node: Node) -> str:
    assert node.address is not None
    return node.address
