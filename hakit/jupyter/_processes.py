"""Node processes of a live cluster: ``hakit node`` children on 127.0.0.1 (`spawn_node`).

Each process runs through `hakit.spawn_node` in a task of the live cluster's nursery, so it
ends with the cluster (`LiveCluster.close`, kernel shutdown), and its child is started with
``--exit-with-parent`` so that even a killed kernel leaves no node behind. What the dashboard
shows of it comes from its control service: ``status`` and ``events`` are polled every
`POLL_INTERVAL` seconds. A paused process (SIGSTOP) cannot answer: its row keeps the last
answer, and says it is paused.
"""

from __future__ import annotations

import datetime
import signal
from dataclasses import dataclass, field
from typing import Any

import trio

from .._runtime._control import ControlClient
from .._runtime._spawn import NodeProcess, spawn_node
from .._runtime._statistics import LinkStatistics
from ..protocol import HakitError, StopReason

#: How often a process node's status and events are read (seconds).
POLL_INTERVAL = 0.25
#: How long one poll waits for an answer (a paused process never answers).
POLL_TIMEOUT = 1.0
#: How long a process may take to start listening (a loaded machine starts Python slowly).
START_TIMEOUT = 60.0

#: Journal event names and the stop-log kind each stands for (see `LiveCluster.log`).
_LOGGED = {
    "ReplicaStopped": "stopped",
    "ReplicaDetached": "detached",
    "MasterChanged": "followed",
    "CommitFailed": "commit failed",
    "ConnectionRefused": "refused",
    "RoleChanged": "role",
}


@dataclass(eq=False)
class SpawnedNode:
    """What the live cluster keeps of one node process.

    Attributes:
        name: the node's name.
        master: the address it was started to replicate from (None: a master).
        args: the extra ``hakit node`` flags it was started with.
        process: the running child, once it listens.
        status: its latest ``status`` answer (`NodeProcess.status`), if any.
        answered: whether its latest poll was answered.
        error: why it could not start, if it could not.
    """

    name: str
    master: str | None
    args: tuple[str, ...]
    process: NodeProcess | None = None
    status: dict[str, Any] | None = None
    answered: bool = False
    error: BaseException | None = None
    events_seen: int = 0
    started: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def pid(self) -> int | None:
        """The child's process id, once it started."""
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """Whether the child runs (paused counts as running)."""
        return self.process is not None and self.process.running

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``paused``, ``killed (SIGKILL)``, ``exited 0``..."""
        process = self.process
        if process is None:
            return "failed" if self.error is not None or self.ended.is_set() else "starting"
        code = process.returncode
        if code is None:
            return "paused" if process.paused else "running"
        if code < 0:
            try:
                return f"killed ({signal.Signals(-code).name})"
            except ValueError:  # pragma: no cover - a signal Python does not name
                return f"killed (signal {-code})"
        return f"exited {code}"

    def links(self) -> list[LinkStatistics]:
        """Its replicas' links, as its latest status told them."""
        if self.status is None or not self.running:
            return []
        names = LinkStatistics.__dataclass_fields__
        return [
            LinkStatistics(**{k: v for k, v in link.items() if k in names})
            for link in self.status.get("replicas", [])
        ]


async def run_process(
    spawned: SpawnedNode,
    *,
    secret: bytes | None,
    cluster: str,
    on_event: Any,
    on_change: Any,
) -> None:
    """Run `spawned`'s child until it exits or the cluster closes, polling it meanwhile.

    Args:
        spawned: the node to start.
        secret: the cluster secret.
        cluster: the cluster name.
        on_event: called with each journal entry of the child (a dict) as it is read.
        on_change: called after every poll.
    """
    try:
        with spawned.scope:
            async with spawn_node(
                spawned.name, master=spawned.master, secret=secret, cluster=cluster,
                args=spawned.args, ready_timeout=START_TIMEOUT,
            ) as process:  # fmt: skip
                spawned.process = process
                spawned.started.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_poll, spawned, process, on_event, on_change)
                    await process.wait()
                    nursery.cancel_scope.cancel()
    except HakitError as exc:  # it did not start: the handle says why
        spawned.error = exc
    finally:
        spawned.started.set()
        spawned.ended.set()
        on_change()


async def _poll(spawned: SpawnedNode, process: NodeProcess, on_event: Any, on_change: Any) -> None:
    while True:
        try:
            client = ControlClient(
                process.address, security=process._security, timeout=POLL_TIMEOUT,
                cluster=process.cluster,
            )  # fmt: skip
            async with client as control:
                status = (await control.call("status"))["status"]
                news = await control.call("events", after=spawned.events_seen, wait=0)
            spawned.status = status
            spawned.answered = True
            for entry in news["events"]:
                if entry["seq"] > spawned.events_seen:
                    spawned.events_seen = entry["seq"]
                    on_event(entry)
        except HakitError:  # paused, or exiting: keep the last answer
            spawned.answered = False
        on_change()
        await trio.sleep(POLL_INTERVAL)


def log_entry(entry: dict[str, Any]) -> tuple[str, StopReason | None, str, float] | None:
    """A journal entry as ``(kind, reason, detail, seconds ago)`` for the stop log, or None."""
    kind = _LOGGED.get(entry.get("event", ""))
    if kind is None:
        return None
    text = str(entry.get("text", ""))
    if kind == "role" and "-> master" not in text:
        return None  # only a process becoming master is worth a line
    if kind == "role":
        kind = "became master"
    reason = None
    for word in text.replace(":", " ").replace("(", " ").split():
        if word in StopReason.__members__:
            reason = StopReason[word]
            break
    detail = text
    if reason is not None and reason.describe() in text:
        # "replica stopped: NAME - <explanation> (<detail>)": the log shows the explanation
        # beside the detail already, as for in-kernel nodes.
        detail = text.split(reason.describe(), 1)[1].strip().removeprefix("(").removesuffix(")")
    ago = 0.0
    try:
        when = datetime.datetime.fromisoformat(str(entry["time"]))
        ago = max((datetime.datetime.now().astimezone() - when).total_seconds(), 0.0)
    except (KeyError, ValueError):  # pragma: no cover - the child always sends it
        pass
    return kind, reason, detail or text, ago
