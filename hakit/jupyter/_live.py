"""The live cluster: a `hakit.Cluster` in the notebook's trio run, driven by method twins.

Every dashboard control has a method twin here, and a click calls exactly that method. A
twin either takes effect before it returns (adding a node, making a master, partitions) or
starts a background task and returns its `Handle` (attaching, writing, waiting). Failures of
background tasks are reported in their handle and in `LiveCluster.log`; they never end the
run or the cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from .._runtime._channels import EID_MASTER, Channel, _Eid
from .._runtime._cluster import Cluster
from .._runtime._events import (
    CommitFailed,
    ConnectionRefused,
    MasterChanged,
    ReplicaDetached,
    ReplicaStopped,
)
from .._runtime._node import Node
from .._runtime._params import (
    CommitResult,
    MasterParams,
    NodeLimits,
    ReplicaMode,
    ReplicaParams,
    Role,
)
from .._runtime._spawn import NodeProcess
from ..protocol import InvalidArgumentError, KilledByReplicaError, ReplicationError, StopReason
from ..storage import Storage
from ..transports import parse_address
from ._errors import NotebookError
from ._guest import Runtime, runtime
from ._handle import Handle, describe_error
from ._processes import SpawnedNode, log_entry, run_process

#: How often the watcher reads new events, samples lag and tells the views (seconds).
WATCH_INTERVAL = 0.05
#: How often `wait_synced` and `wait_until` look at their condition (seconds).
POLL_INTERVAL = 0.01
#: How long a twin that takes effect at once may drive the run (seconds).
SYNC_TIMEOUT = 5.0
#: How long `force_master` waits for the old master's other replicas to follow (seconds).
FOLLOW_TIMEOUT = 10.0
#: The default link latency of a live cluster, ``(mean, jitter)`` in seconds.
DEFAULT_LATENCY = (0.005, 0.002)
#: Log entries kept (older ones are dropped; `LiveCluster.log_dropped` counts them).
LOG_LENGTH = 500


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of the stop-reason log.

    Attributes:
        time: seconds since the cluster started (trio clock).
        node: the node it is about.
        kind: ``"stopped"``, ``"detached"``, ``"stepped down"``, ``"followed"``,
            ``"refused"``, ``"commit failed"``, ``"error"`` (a task that failed), or for
            node processes ``"became master"``, ``"killed"``, ``"paused"``, ``"resumed"``.
        reason: the stop reason, when there is one.
        detail: what happened, in words.
    """

    time: float
    node: str
    kind: str
    reason: StopReason | None
    detail: str

    @property
    def explanation(self) -> str:
        """The stop reason's plain explanation, or ``""``."""
        return self.reason.describe() if self.reason is not None else ""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """What the dashboard's table shows for one node.

    Attributes:
        name: the node's name.
        address: where it listens.
        role: ``"master"``, ``"replica"`` or ``"standalone"``.
        generation: its generation.
        txid: its last transaction id.
        master: the master it replicates from (replicas).
        lag: transactions behind its master (replicas), else None.
        lag_seconds: how long the oldest transaction it lacks has existed, else None.
        connection: ``"syncing"``, ``"streaming"``, ``"cut"``, ``"connecting"``,
            ``"stopped"``, ``"serving"`` or ``"-"``.
        sync: how it was synced (``"full"``, ``"incremental"``, ``"equal"``), if it is.
        progress: the share (0-1) of the initial load sent, while syncing.
        writes_disabled: whether it refuses writes after stepping down.
        pid: the process id of a node process (`LiveCluster.spawn_node`), else None.
        process: a node process's state (``"starting"``, ``"running"``, ``"paused"``,
            ``"killed (SIGKILL)"``, ``"exited 1"``...), None for an in-kernel node.
    """

    name: str
    address: str | None
    role: str
    generation: int
    txid: int
    master: str | None
    lag: int | None
    lag_seconds: float | None
    connection: str
    sync: str | None
    progress: float | None
    writes_disabled: bool
    pid: int | None = None
    process: str | None = None


def _parts(parts: bytes | str | Iterable[bytes | str]) -> list[bytes | str]:
    if isinstance(parts, bytes | str):
        return [parts]
    return list(parts)


class LiveCluster:
    """A cluster of in-kernel nodes that runs in the background of a notebook.

    Create it with `hakit.jupyter.open_cluster`. It wraps a trio `hakit.Cluster`
    (`cluster`) and owns the method twins of every dashboard control. Shown as a cell's
    value it is the live dashboard (`hakit.widgets.ClusterDashboard`).

    Attributes:
        cluster: the trio `hakit.Cluster` (use it from trio code).
        seed: the seed of its simulated network.
        name: the cluster name its nodes share.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        seed: int,
        name: str,
        latency: tuple[float, float] = DEFAULT_LATENCY,
    ) -> None:
        self.latency = latency
        self._runtime = rt
        self.seed = seed
        self.name = name
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._cluster: Cluster | None = None
        self._closed = False
        self._ended = False
        self._attaches: dict[str, Handle[StopReason]] = {}
        self._serving: dict[str, Handle[None]] = {}
        self._channels: dict[tuple[str, str | _Eid], Channel] = {}
        self._processes: dict[str, SpawnedNode] = {}  # node processes (spawn_node)
        self._tcp: dict[str, str] = {}  # in-kernel nodes' TCP listeners, for processes
        self._tcp_lock = trio.Lock()
        self._handles: deque[Handle[Any]] = deque(maxlen=200)
        self._log: deque[LogEntry] = deque(maxlen=LOG_LENGTH)
        self._logged = 0
        self._events_seen = 0
        self._listeners: list[Callable[[], None]] = []
        self._started_at = 0.0
        # time control (see pause, step, speed)
        self._paused = False
        self._stepping = False
        self._speed = 1.0
        self._autojump = math.inf
        # master txid samples (txid, time first seen) for lag in seconds
        self._commit_times: deque[tuple[int, float]] = deque(maxlen=4096)
        self._dashboard: Any = None
        rt.start_soon(self._main)
        if not rt.drive_until(lambda: self._cluster is not None or self._ended, timeout=5):
            raise NotebookError("the cluster did not start")  # pragma: no cover

    async def _main(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._started_at = trio.current_time()
                    self._nursery = nursery
                    self._cluster = Cluster(
                        nursery, seed=self.seed, cluster_name=self.name, latency=self.latency
                    )
                    nursery.start_soon(self._watch)
                    await trio.sleep_forever()
        finally:
            self._closed = True
            self._ended = True
            self._nursery = None
            self._notify()

    # -- state --------------------------------------------------------------------------------
    @property
    def cluster(self) -> Cluster:
        """The trio `hakit.Cluster` inside."""
        assert self._cluster is not None
        return self._cluster

    @property
    def closed(self) -> bool:
        """Whether `close` was called (or the run ended)."""
        return self._closed

    @property
    def nodes(self) -> dict[str, Node]:
        """The nodes by name."""
        return self.cluster.nodes

    def __getitem__(self, name: str) -> Node:
        return self._node(name)

    @property
    def master(self) -> Node | None:
        """The node that is the master now (the one accepting writes), if any."""
        masters = [n for n in self.cluster.nodes.values() if n.role is Role.MASTER]
        return masters[-1] if masters else None

    @property
    def log(self) -> list[LogEntry]:
        """The stop-reason log, oldest first (the newest `LOG_LENGTH` entries), up to now."""
        if self._cluster is not None:
            # What happened since the watcher last looked comes too: a cell that awaited a
            # stop and then reads the log must find it, however busy the machine.
            self._read_events()
        return list(self._log)

    @property
    def log_dropped(self) -> int:
        """How many old log entries were dropped to keep the log bounded."""
        return self._logged - len(self._log)

    @property
    def handles(self) -> list[Handle[Any]]:
        """The recent background tasks started by twins, oldest first."""
        return list(self._handles)

    def attach_handle(self, name: str) -> Handle[StopReason] | None:
        """The handle of `name`'s latest attach, if it ever attached."""
        return self._attaches.get(name)

    def now(self) -> float:
        """Seconds since the cluster started, on the trio clock."""
        return trio.current_time() - self._started_at

    def rows(self) -> list[NodeRow]:
        """Return the dashboard table's rows: one per node, in the order they were added."""
        nodes = self.cluster.nodes
        stats = {name: node.statistics() for name, node in nodes.items()}
        txids = {name: st.txid for name, st in stats.items()}
        links = {}
        for st in stats.values():
            for link in st.replicas:
                links[link.replica] = (st.name, link)
        for spawned in self._processes.values():  # a process master's replicas, as it said
            for link in spawned.links():
                links[link.replica] = (spawned.name, link)
            if spawned.status is not None and spawned.running:
                txids[spawned.name] = spawned.status["txid"]
        network = self.cluster.network
        rows = []
        for name, st in stats.items():
            master = st.master
            lag = lag_seconds = progress = None
            sync = None
            connection = "-"
            attach = self._attaches.get(name)
            if st.role == "master":
                connection = "serving"
            elif name in links and (
                links[name][0] in stats or (st.role == "replica" and st.master == links[name][0])
            ):  # a process master's word (polled, maybe stale) only while it follows that one
                master = links[name][0]
                link = links[name][1]
                connection = link.state
                sync = link.sync
                lag = max(txids.get(master, st.txid) - st.txid, 0)
                lag_seconds = self._lag_seconds(st.txid) if lag else 0.0
                if link.state == "syncing":
                    progress = link.load_progress
                    if progress is None:  # an incremental resync: its queued backlog
                        total = link.bytes_sent + link.unsent_bytes
                        progress = link.bytes_sent / total if total else 0.0
            elif attach is not None and not attach.done:
                connection = "connecting"
            elif attach is not None:
                connection = "stopped"
            if master is not None and st.role != "master" and _cut(network, name, master):
                connection = "cut"
            address = st.address
            if name in self._tcp:  # also reachable by node processes
                address = f"{address}, {self._tcp[name]}"
            rows.append(
                NodeRow(
                    name=name, address=address, role=st.role, generation=st.generation,
                    txid=st.txid, master=master, lag=lag, lag_seconds=lag_seconds,
                    connection=connection, sync=sync, progress=progress,
                    writes_disabled=st.writes_disabled,
                )
            )  # fmt: skip
        for spawned in self._processes.values():
            rows.append(self._process_row(spawned, links, txids))
        return rows

    def _process_row(
        self,
        spawned: SpawnedNode,
        links: dict[str, tuple[str, Any]],
        txids: dict[str, int],
    ) -> NodeRow:
        """A node process's row, from its latest status answer and its master's link."""
        st = spawned.status or {}
        running = spawned.running
        state = spawned.state
        if state == "running" and spawned.status is not None and not spawned.answered:
            state = "not answering"
        role = str(st.get("role", "standalone")) if running else "down"
        txid = int(st.get("txid", 0))
        master = st.get("master") if running and role != "master" else None
        lag = lag_seconds = progress = None
        sync = None
        connection = "-"
        if role == "master":
            connection = "serving"
        elif running and spawned.name in links:
            master, link = links[spawned.name]
            connection, sync = link.state, link.sync
            if master in self.cluster.nodes:
                role = "replica"  # an in-kernel master holds its link now: fresher than a poll
            # Its status is a poll old; what it acknowledged since, it has applied.
            txid = max(txid, link.acked_txid)
            lag = max(txids.get(master, txid) - txid, 0)
            lag_seconds = self._lag_seconds(txid) if lag else 0.0
            if link.state == "syncing":
                progress = link.load_progress
        elif running and spawned.master is not None:
            connection = "connecting"
        process = spawned.process
        return NodeRow(
            name=spawned.name, address=process.address if process else None, role=role,
            generation=int(st.get("generation", 0)), txid=txid, master=master, lag=lag,
            lag_seconds=lag_seconds, connection=connection, sync=sync, progress=progress,
            writes_disabled=bool(st.get("writes_disabled", False)) and running,
            pid=spawned.pid, process=state,
        )  # fmt: skip

    def _lag_seconds(self, txid: int) -> float:
        # The oldest transaction the replica lacks is txid + 1: how long has it existed?
        now = trio.current_time()
        for seen_txid, when in self._commit_times:
            if seen_txid > txid:
                return max(now - when, 0.0)
        return 0.0

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change the watcher sees (views refresh there)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- the background watcher ---------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            self._read_events()
            master = self.master
            if master is not None:
                txid = master.txid
                if not self._commit_times or self._commit_times[-1][0] < txid:
                    self._commit_times.append((txid, trio.current_time()))
            self._notify()
            await trio.sleep(WATCH_INTERVAL)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception as exc:  # a view's failure is shown, never raised into trio
                self._add_log("dashboard", "error", None, describe_error(exc))

    def _read_events(self) -> None:
        # read() hands each event once, even as the bounded log drops old ones.
        new, self._events_seen = self.cluster.events.read(self._events_seen)
        base = self._started_at
        for event in new:
            if isinstance(event, ReplicaStopped):
                self._add_log(event.node, "stopped", event.reason, event.detail, event.time - base)
            elif isinstance(event, ReplicaDetached):
                detail = f"replica {event.replica} detached: {event.detail}"
                self._add_log(event.node, "detached", event.reason, detail, event.time - base)
            elif isinstance(event, MasterChanged):
                detail = f"now follows {event.new_master} (generation {event.generation})"
                self._add_log(event.node, "followed", None, detail, event.time - base)
            elif isinstance(event, CommitFailed):
                self._add_log(event.node, "commit failed", None, event.detail, event.time - base)
            elif isinstance(event, ConnectionRefused):
                detail = f"{event.peer}: {event.detail}"
                self._add_log(event.node, "refused", None, detail, event.time - base)

    def _add_log(
        self, node: str, kind: str, reason: StopReason | None, detail: str, at: float | None = None
    ) -> None:
        if at is None and self._cluster is not None:
            self._read_events()  # the events before it come first
        self._logged += 1
        self._log.append(LogEntry(self.now() if at is None else at, node, kind, reason, detail))

    # -- helpers ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise NotebookError(
                f"cluster {self.name!r} is closed: call hj.open_cluster() for a new one"
            )

    def _node(self, name: str) -> Node:
        if isinstance(name, Node):
            return name
        node = self.cluster.nodes.get(name)
        if node is None:
            if name in self._processes:
                raise NotebookError(
                    f"{name} is a node process (spawn_node), not a node of this kernel: drive "
                    f"it with cluster.process({name!r}).call(...) (put, get, promote, "
                    "attach...), and kill, pause or resume it"
                )
            known = ", ".join([*self.cluster.nodes, *self._processes]) or "none yet"
            raise NotebookError(f"no node named {name!r} in this cluster (nodes: {known})")
        return node

    def _spawn(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        status: Callable[[], str] | None = None,
        report: bool = True,
    ) -> Handle[Any]:
        self._check_open()
        assert self._nursery is not None
        handle: Handle[Any] = Handle(
            self._runtime, what, fn, *args, nursery=self._nursery, status=status,
            on_done=self._task_done if report else None,
        )  # fmt: skip
        self._handles.append(handle)
        return handle

    def _task_done(self, handle: Handle[Any]) -> None:
        if handle.state == "failed":
            error = handle.exception()
            assert error is not None
            reason = getattr(error, "stop_reason", None)
            self._add_log(
                "cluster", "error", reason if isinstance(reason, StopReason) else None,
                f"{handle.what} failed: {describe_error(error)}",
            )  # fmt: skip
        self._notify()

    def _drive(self, handle: Handle[Any]) -> Any:
        """Run `handle` to its end now (a short start-up step) and return its result."""
        if not self._runtime.drive_until(lambda: handle.done, timeout=SYNC_TIMEOUT):
            raise NotebookError(f"{handle.what} did not finish within {SYNC_TIMEOUT:g} s")
        return handle.result()

    # -- twins: nodes and roles ---------------------------------------------------------------
    def add_node(
        self, name: str, *, storage: Storage | None = None, limits: NodeLimits | None = None
    ) -> Node:
        """Add a node listening at ``mem:<name>``; it is running when this returns.

        Args:
            name: the node's name, unique in the cluster.
            storage: its database (default: a new `MemoryStorage`).
            limits: what its peers may cost it (default: `hakit.NodeLimits()`).

        Raises:
            InvalidArgumentError: the name is empty or taken.
        """
        self._check_open()
        node = self.cluster._new_node(name, storage=storage, limits=limits)
        assert self._nursery is not None
        self._drive(self._spawn(f"start {name}", self.cluster._start_node, node, self._nursery))
        self._notify()
        return node

    def make_master(self, name: str, params: MasterParams | None = None) -> Node:
        """Make `name` a master (`set_master_params`) and serve replicas in the background.

        Raises:
            LocalProtocolError: the node is attached as a replica (stop it first).
        """
        self._check_open()
        node = self._node(name)
        node.set_master_params(params)
        self._serve(node)
        self._notify()
        return node

    def _serve(self, node: Node) -> None:
        serving = self._serving.get(node.name)
        if serving is not None and not serving.done:
            return

        async def serve() -> None:
            try:
                await node.serve_replicas()
            except KilledByReplicaError as exc:
                self._add_log(node.name, "stepped down", None, str(exc))

        self._serving[node.name] = self._spawn(f"{node.name} serves replicas", serve)

    def attach(
        self,
        replica: str,
        master: str,
        force_master: bool = False,
        params: ReplicaParams | None = None,
    ) -> Handle[StopReason]:
        """Attach `replica` to `master` in the background; the handle resolves to the stop reason.

        Args:
            replica: the node that replicates.
            master: the master's node name (or an address).
            force_master: attach with ``FORCE_MASTER``: sync, then take over as master.
            params: the `ReplicaParams` (``FORCE_MASTER`` is added when `force_master`).

        Raises:
            NotebookError: an unknown node, or `replica` is already attached or a master.
        """
        self._check_open()
        node = self._node(replica)
        current = self._attaches.get(replica)
        if current is not None and not current.done:
            raise NotebookError(
                f"{replica} is already attached; call cluster.replica_stop({replica!r}) first"
            )
        if node.role is Role.MASTER:
            raise NotebookError(
                f"{replica} is a master: a master cannot attach to another one "
                "(add a fresh node, or force master from a replica)"
            )
        if master in self.cluster.nodes:
            if master == replica:
                raise NotebookError(f"{replica} cannot attach to itself")
            address = self.cluster.nodes[master].address or f"mem:{master}"
        elif master in self._processes:
            address = self.process(master).address  # over TCP, to the other process
        else:
            address = master
        params = params or ReplicaParams()
        if force_master:
            params = dataclasses.replace(params, mode=params.mode | ReplicaMode.FORCE_MASTER)
        return self._attach(node, address, params, master)

    def _attach(
        self, node: Node, address: str, params: ReplicaParams, master: str
    ) -> Handle[StopReason]:
        forcing = ReplicaMode.FORCE_MASTER in params.mode

        async def attach() -> StopReason:
            # A replica's attach returns once it has said goodbye; its master drops the old
            # link a moment later, and until then the name is taken (a new attach would be
            # refused as a duplicate). Re-attaching right after a stop is what a learner (and
            # force_master) does, so give the master that moment.
            old_master = self.cluster.nodes.get(master)
            if old_master is not None and node.name in old_master.replicas:
                with trio.move_on_after(SYNC_TIMEOUT):
                    await _until(lambda: node.name not in old_master.replicas)
            reason = await node.attach_master(address, params)
            if reason is StopReason.BECOMES_MASTER:
                self._serve(node)
            return reason

        def status() -> str:
            for row in self.rows():
                if row.name == node.name:
                    return f"{row.connection}, txid {row.txid}"
            return ""  # pragma: no cover

        what = f"{'force master: ' if forcing else ''}attach {node.name} to {master}"
        # A stop is logged from its ReplicaStopped event; only other failures are reported.
        handle: Handle[StopReason] = self._spawn(what, attach, status=status, report=False)
        handle.add_done_callback(self._attach_done)
        self._attaches[node.name] = handle
        return handle

    def _attach_done(self, handle: Handle[Any]) -> None:
        error = handle.exception() if handle.state == "failed" else None
        if error is not None and not isinstance(error, ReplicationError):
            self._task_done(handle)
        self._notify()

    def replica_stop(self, name: str) -> Handle[StopReason]:
        """Stop `name`'s replication gracefully; returns its attach handle.

        Raises:
            LocalProtocolError: the node is not attached.
        """
        self._check_open()
        node = self._node(name)
        node.replica_stop()
        return self._attaches[name] if name in self._attaches else self._nothing(name)

    def cancel(self, name: str) -> Handle[StopReason]:
        """Interrupt `name`'s replication at once; returns its attach handle.

        Raises:
            LocalProtocolError: the node is not attached.
        """
        self._check_open()
        node = self._node(name)
        node.cancel()
        return self._attaches[name] if name in self._attaches else self._nothing(name)

    def _nothing(self, name: str) -> Handle[StopReason]:  # pragma: no cover - attached elsewhere
        raise NotebookError(f"{name} was attached outside this live cluster")

    def detach(self, replica: str, master: str | None = None) -> Handle[StopReason] | None:
        """Detach `replica` from the master side; its attach returns MASTER_REQUESTED_DISCONNECT.

        Args:
            replica: the replica's name.
            master: the master it is attached to (default: the one that has it).

        Returns:
            The replica's attach handle, if it attached from this live cluster.

        Raises:
            NotebookError: no master has that replica attached.
        """
        self._check_open()
        if master is None:
            owners = [n for n in self.cluster.nodes.values() if replica in n.replicas]
            if not owners:
                raise NotebookError(f"no master has a replica named {replica!r} attached")
            master_node = owners[0]
        else:
            master_node = self._node(master)
        master_node.detach_replica(replica)
        return self._attaches.get(replica)

    def force_master(self, name: str) -> Handle[StopReason]:
        """Make replica `name` the master: stop its attach, re-attach with FORCE_MASTER.

        The old master steps down, its other replicas follow the new one. The handle
        resolves to the stop reason of the forced attach (``BECOMES_MASTER``).

        Raises:
            NotebookError: `name` is already the master, or there is no master to take over.
        """
        self._check_open()
        node = self._node(name)
        if node.role is Role.MASTER:
            raise NotebookError(f"{name} is already the master")
        master_name = node.statistics().master
        if master_name is None:
            current = self.master
            if current is None:
                raise NotebookError("there is no master to take over from: make_master() first")
            master_name = current.name
        master_node = self.cluster.nodes.get(master_name)
        if master_node is None and master_name in self._processes:
            raise NotebookError(
                f"{name}'s master {master_name} is a node process: force master takes over "
                "from a master of this kernel; for a process, use hakit force-master there"
            )
        address = master_node.address if master_node is not None else None
        if master_node is None or address is None:
            raise NotebookError(f"the master {master_name} has no address")  # pragma: no cover
        running = self._attaches.get(name)

        async def force() -> StopReason:
            if running is not None and not running.done:
                node.replica_stop()
                with trio.move_on_after(SYNC_TIMEOUT):
                    await running._finished.wait()
                if not running.done:  # the graceful stop hangs (a cut link): interrupt
                    node.cancel()
                    await running._finished.wait()
            # The master drops the old link once the replica's goodbye arrives (the network
            # takes time): a second attach of the same name before that is refused.
            with trio.move_on_after(SYNC_TIMEOUT):
                await _until(lambda: name not in master_node.replicas)
            followers = [r for r in master_node.replicas if r != name]
            params = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
            reason = await self._attach(node, address, params, master_name).wait()
            if reason is StopReason.BECOMES_MASTER:
                # The whole sequence: the old master's other replicas follow the new one.
                with trio.move_on_after(FOLLOW_TIMEOUT):
                    await _until(lambda: all(self._followed(f, name) for f in followers))
            return reason

        return self._spawn(f"force master {name}", force)

    def _followed(self, follower: str, master: str) -> bool:
        attach = self._attaches.get(follower)
        if attach is not None and attach.done:
            return True  # it stopped instead of following: nothing to wait for
        node = self.cluster.nodes.get(follower)
        return node is None or (node.statistics().master == master and self.synced(follower))

    # -- twins: data --------------------------------------------------------------------------
    def _writer(self, node: str | None) -> Node:
        if node is not None:
            return self._node(node)
        master = self.master
        if master is None:
            raise NotebookError("no node is the master: call cluster.make_master(name) first")
        return master

    def _process_writer(self, node: str | None) -> SpawnedNode | None:
        """The node process a write goes to: named, or the only master when none is in-kernel."""
        if node is not None:
            return self._running(node) if node in self._processes else None
        if self.master is not None:
            return None
        masters = [
            p for p in self._processes.values()
            if p.running and (p.status or {}).get("role") == "master"
        ]  # fmt: skip
        return masters[-1] if masters else None

    def _process_commit(self, spawned: SpawnedNode, op: str, **args: Any) -> Handle[CommitResult]:
        process = spawned.process
        assert process is not None

        async def commit() -> CommitResult:
            done = await process.call(op, **args)  # as `hakit put` / `hakit delete` do
            generation = int((spawned.status or {}).get("generation", 0))
            return CommitResult(
                done["txid"], generation, tuple(done["acked"]), tuple(done["detached"])
            )

        return self._spawn(f"{op} {args['key']!r} on node process {spawned.name}", commit)

    def write(self, key: str | bytes, value: Any, node: str | None = None) -> Handle[CommitResult]:
        """Commit ``key = value`` on `node` (default: the current master).

        `node` may be a node process (`spawn_node`): the write goes through its control
        service, as ``hakit put`` does; with no in-kernel master, a master process is the
        default.

        Returns:
            A handle resolving to the `CommitResult`.
        """
        self._check_open()
        spawned = self._process_writer(node)
        if spawned is not None:
            return self._process_commit(spawned, "put", key=key, value=value)
        target = self._writer(node)

        async def write() -> CommitResult:
            async with target.transaction() as tx:
                tx.put(key, value)
            assert tx.result is not None
            return tx.result

        return self._spawn(f"write {key!r} on {target.name}", write)

    def delete(self, key: str | bytes, node: str | None = None) -> Handle[CommitResult]:
        """Delete `key` on `node` (default: the current master); resolves to the `CommitResult`.

        As `write`, `node` may be a node process.
        """
        self._check_open()
        spawned = self._process_writer(node)
        if spawned is not None:
            return self._process_commit(spawned, "delete", key=key)
        target = self._writer(node)

        async def delete() -> CommitResult:
            async with target.transaction() as tx:
                tx.delete(key)
            assert tx.result is not None
            return tx.result

        return self._spawn(f"delete {key!r} on {target.name}", delete)

    # -- twins: channels ----------------------------------------------------------------------
    def _channel(self, sender: str, target: str | _Eid) -> Channel:
        key = (sender, target)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._node(sender).channel(target)
            self._channels[key] = channel
        return channel

    def send(
        self, sender: str, target: str | _Eid, parts: bytes | str | Sequence[bytes | str]
    ) -> Handle[None]:
        """Send a one-way message from `sender` to `target` (a node name or EID_MASTER)."""
        self._check_open()
        channel = self._channel(sender, target)
        payload = _parts(parts)
        name = "the master" if target is EID_MASTER else target
        return self._spawn(f"send from {sender} to {name}", channel.send_msg, payload)

    def request(
        self,
        sender: str,
        target: str | _Eid,
        parts: bytes | str | Sequence[bytes | str],
        timeout: float | None = None,
        multiple: bool = False,
    ) -> Handle[Any]:
        """Send a request from `sender` to `target`; resolves to the answer.

        Args:
            sender: the node that sends.
            target: a node name, an address, or `hakit.EID_MASTER`.
            parts: the message parts (bytes, or str sent as UTF-8).
            timeout: seconds to wait for the answer (None: the channel default, 5 s).
            multiple: accept a multi-part answer (resolves to a list of bytes).
        """
        self._check_open()
        channel = self._channel(sender, target)
        payload = _parts(parts)
        name = "the master" if target is EID_MASTER else target

        async def request() -> Any:
            return await channel.send_request(payload, timeout=timeout, multiple=multiple)

        return self._spawn(f"request from {sender} to {name}", request)

    # -- twins: the network -------------------------------------------------------------------
    def partition(self, a: str | Iterable[str], b: str | Iterable[str]) -> None:
        """Cut every link between the nodes of `a` and those of `b` (until `heal`)."""
        self._check_open()
        self.cluster.network.partition(a, b)
        self._notify()

    def heal(self) -> None:
        """Remove every partition; held bytes are delivered in order."""
        self._check_open()
        self.cluster.network.heal()
        self._notify()

    def set_latency(
        self, a: str | Iterable[str], b: str | Iterable[str], mean: float, jitter: float = 0.0
    ) -> None:
        """Delay every chunk between `a` and `b` by ``mean ± jitter`` seconds (seeded).

        See `hakit.transports.SimulatedNetwork.set_latency`.
        """
        self._check_open()
        self.cluster.network.set_latency(a, b, mean, jitter)
        self._notify()

    def set_loss(self, a: str | Iterable[str], b: str | Iterable[str], p: float) -> None:
        """Lose each transmission between `a` and `b` with probability `p` (seeded).

        As on TCP, a lost chunk is sent again after a timeout (so loss shows as delay),
        and a chunk lost too often resets the connection; see
        `hakit.transports.SimulatedNetwork.set_loss`.
        """
        self._check_open()
        self.cluster.network.set_loss(a, b, p)
        self._notify()

    def hold(self, a: str, b: str) -> None:
        """Hold the link between `a` and `b`: its bytes wait in flight until `release`."""
        self._check_open()
        self.cluster.network.hold(a, b)
        self._notify()

    def release(self, a: str, b: str) -> None:
        """Release the link between `a` and `b`: what waited is delivered, in order."""
        self._check_open()
        self.cluster.network.release(a, b)
        self._notify()

    def crash(self, name: str) -> None:
        """Kill node `name` like a process dies (see `hakit.Cluster.crash`).

        It is down when this returns: its peers see its connections end.
        """
        self._check_open()
        self._node(name)
        self._drive(self._spawn(f"crash {name}", self.cluster.crash, name, report=False))
        self._serving.pop(name, None)
        self._tcp.pop(name, None)  # its listeners died with it
        self._notify()

    def restart(self, name: str, *, storage: Storage | None = None) -> Node:
        """Bring a crashed node back on its storage, standalone (see `hakit.Cluster.restart`).

        Make it a master (`make_master`) or attach it (`attach`) again, as after a restart.
        """
        self._check_open()
        self._node(name)
        restart = functools.partial(self.cluster.restart, name, storage=storage)
        node: Node = self._drive(self._spawn(f"restart {name}", restart))
        self._notify()
        return node

    # -- twins: node processes ----------------------------------------------------------------
    @property
    def processes(self) -> dict[str, NodeProcess]:
        """The node processes that started (`spawn_node`), by name; exited ones included."""
        return {n: p.process for n, p in self._processes.items() if p.process is not None}

    def process(self, name: str) -> NodeProcess:
        """The `hakit.NodeProcess` of node process `name` (``.call(op, ...)``, ``.lines``...).

        Raises:
            NotebookError: no node process of that name has started.
        """
        spawned = self._processes.get(name)
        if spawned is None or spawned.process is None:
            known = ", ".join(self.processes) or "none"
            state = f" ({spawned.state})" if spawned is not None else ""
            raise NotebookError(f"no node process named {name!r} runs{state} (processes: {known})")
        return spawned.process

    def spawn_node(
        self,
        name: str,
        *,
        master: str | None = None,
        sqlite: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
    ) -> Handle[NodeProcess]:
        """Start node `name` as a separate process: ``hakit node`` on 127.0.0.1, over TCP.

        It is a node of this cluster in the dashboard (its row is read from its control
        service), with real faults: `kill` (SIGKILL), `pause` / `resume` (SIGSTOP / SIGCONT).
        It ends with the cluster (`close`, kernel shutdown). Spawning a name whose process
        has exited starts it again (on the same `sqlite` file, it keeps its data).

        Args:
            name: the node's name (not one of this kernel's nodes).
            master: what it replicates from: an in-kernel node (which then also listens on
                TCP loopback, see `listen_tcp`), another node process, or an address.
                None: it is a master.
            sqlite: keep its database in this SQLite file (default: in memory).
            args: more ``hakit node`` flags (``--wait-data-timeout``, ``--echo``...).

        Returns:
            A handle resolving to its `hakit.NodeProcess` once it listens.

        Raises:
            NotebookError: the name is taken, or `master` is unknown or not running.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a node needs a non-empty name")
        if name in self.cluster.nodes:
            raise NotebookError(f"{name} is already a node of this kernel's cluster")
        old = self._processes.get(name)
        if old is not None and (old.running or old.state == "starting"):
            raise NotebookError(
                f"node process {name} is {old.state}: cluster.kill({name!r}) it first"
            )
        if master is not None and master not in self.cluster.nodes:
            if master == name:
                raise NotebookError(f"{name} cannot replicate from itself")
            if master in self._processes:
                running = self._running(master).process
                assert running is not None
                master = running.address
            else:
                parse_address(master)  # a malformed address fails here, not in the child
                if master.startswith("mem:"):
                    raise NotebookError(
                        f"{master} is an address inside this kernel: a process reaches an "
                        "in-kernel node by its name (spawn_node(..., master='alpha'))"
                    )
        flags = tuple(args)
        if sqlite is not None:
            flags = ("--sqlite", os.fspath(sqlite), *flags)
        spawned = SpawnedNode(name, None, flags)
        self._processes[name] = spawned

        async def spawn() -> NodeProcess:
            if master is not None:
                spawned.master = (
                    await self._tcp_listen(master) if master in self.cluster.nodes else master
                )
            assert self._nursery is not None
            run = functools.partial(
                run_process, spawned, secret=self.cluster.secret, cluster=self.name,
                on_event=functools.partial(self._process_event, name), on_change=self._notify,
            )  # fmt: skip
            self._nursery.start_soon(run)
            await spawned.started.wait()
            if spawned.process is None:
                raise spawned.error or NotebookError(f"node process {name} did not start")
            return spawned.process

        handle: Handle[NodeProcess] = self._spawn(f"spawn node process {name}", spawn)
        self._notify()
        return handle

    def listen_tcp(self, name: str) -> str:
        """Let in-kernel node `name` also listen on TCP loopback; return that address.

        Node processes (and ``hakit`` commands in a terminal) reach it there. Listening
        once is enough: the same address is returned again.
        """
        self._check_open()
        self._node(name)
        address: str = self._drive(self._spawn(f"{name} listens on TCP", self._tcp_listen, name))
        self._notify()
        return address

    async def _tcp_listen(self, name: str) -> str:
        async with self._tcp_lock:  # two processes spawned at once share one listener
            address = self._tcp.get(name)
            if address is None:
                address = await self._node(name).listen("127.0.0.1:0")
                self._tcp[name] = address
            return address

    def kill(self, name: str) -> None:
        """``kill -9`` node process `name` (SIGKILL); an in-kernel node is `crash`-ed.

        The process is dead when this returns: no goodbye, its sockets closed by the
        operating system. Its row stays, marked killed; `spawn_node` starts it again.
        """
        self._check_open()
        if name in self.cluster.nodes:
            self.crash(name)
            return
        spawned = self._running(name)
        process = spawned.process
        assert process is not None
        process.kill()
        self._add_log(name, "killed", None, f"pid {process.pid}: SIGKILL, no goodbye")
        self._runtime.drive_until(lambda: not process.running, timeout=SYNC_TIMEOUT)
        self._notify()

    def _running(self, name: str) -> SpawnedNode:
        spawned = self._processes.get(name)
        if spawned is None or not spawned.running:
            if name in self.cluster.nodes:
                raise NotebookError(
                    f"{name} runs in this kernel, not in a process of its own: hold or "
                    "partition its links, crash it, or pause() the whole cluster's clock"
                )
            if spawned is not None:
                raise NotebookError(f"node process {name} is {spawned.state}")
            raise NotebookError(f"no node process named {name!r}")
        return spawned

    def _signal(self, name: str, kind: str, detail: str) -> None:
        self._check_open()
        spawned = self._running(name)
        process = spawned.process
        assert process is not None
        if kind == "paused":
            process.pause()
        else:
            process.resume()
        self._add_log(name, kind, None, f"pid {process.pid}: {detail}")
        self._notify()

    def _process_event(self, name: str, entry: dict[str, Any]) -> None:
        logged = log_entry(entry)
        if logged is not None:
            kind, reason, detail, ago = logged
            self._add_log(name, kind, reason, detail, max(self.now() - ago, 0.0))

    # -- twins: the clock ---------------------------------------------------------------------
    @property
    def _clock(self) -> trio.testing.MockClock:
        clock = self._runtime.clock
        if not isinstance(clock, trio.testing.MockClock):
            raise NotebookError(
                "time control needs the notebook's own clock; this run was started with "
                f"{type(clock).__name__}"
            )
        return clock

    @property
    def paused(self) -> bool:
        """Whether the cluster's clock is paused (`pause`, `step`)."""
        return self._paused

    @property
    def speed(self) -> float:
        """How fast the cluster's time runs against the wall clock (1: real time).

        ``cluster.speed = 0.1`` is slow motion (a handshake takes ten times longer to
        watch), ``10`` fast forward. Setting it while paused takes effect at `resume`.
        """
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1000:
            raise ValueError(f"speed must be a number in (0, 1000], not {value!r}")
        clock = self._clock
        self._speed = float(value)
        if not self._paused:
            clock.rate = self._speed
        self._notify()

    def pause(self, name: str | None = None) -> None:
        """Stop the cluster's time until `resume` or `step`; or, given a name, that process.

        Nothing is delivered and no timeout fires meanwhile; cells and clicks still work.
        (Node processes run on real time: pausing the kernel's clock freezes the in-kernel
        nodes only, and process peers see them fall silent.)

        Args:
            name: a node process (`spawn_node`) to freeze with SIGSTOP instead: its peers
                see silence, not a closed link, until `resume(name)`.

        Raises:
            NotebookError: `name` is not a running node process.
        """
        if name is not None:
            self._signal(name, "paused", "SIGSTOP: frozen, its sockets stay open")
            return
        clock = self._clock
        if not self._paused:
            self._paused = True
            self._autojump = clock.autojump_threshold
            clock.rate = 0.0
            clock.autojump_threshold = math.inf
        self._notify()

    def resume(self, name: str | None = None) -> None:
        """Let time run again, at `speed`; or, given a name, continue that paused process.

        Args:
            name: a node process paused with `pause(name)`: SIGCONT, it goes on where it
                stopped.

        Raises:
            NotebookError: `name` is not a running node process.
        """
        if name is not None:
            self._signal(name, "resumed", "SIGCONT: it goes on where it stopped")
            return
        clock = self._clock
        if self._paused:
            self._paused = False
            self._stepping = False
            clock.autojump_threshold = self._autojump
            clock.rate = self._speed
        self._notify()

    def step(self, *, skip: Iterable[str] = ("KEEPALIVE",)) -> Handle[Any]:
        """Pause (if running), then move time on to the next message delivered, and stop.

        Time jumps over the quiet stretch in between (timers due meanwhile fire, as they
        would), and stops at the instant the message arrives; what the receiver does in
        that instant is done. The `Handle` ends with that `hakit.MessageEvent`.

        Args:
            skip: message kinds not worth stopping at (default: keep-alives).
        """
        self._check_open()
        self.pause()
        clock = self._clock
        skipped = set(skip)
        watchers = self.cluster._tracer.watchers
        arrived = trio.Event()
        found: list[Any] = []

        def watch(event: Any) -> None:
            if event.kind not in skipped and not found:
                found.append(event)
                clock.autojump_threshold = math.inf  # stop right here
                arrived.set()

        async def step() -> Any:
            watchers.append(watch)
            self._stepping = True
            try:
                clock.autojump_threshold = 0.0  # jump from deadline to deadline...
                await arrived.wait()  # ...until the next message arrives
                return found[0]
            finally:
                watchers.remove(watch)
                self._stepping = False
                if self._paused:
                    clock.autojump_threshold = math.inf
                self._notify()

        return self._spawn("step", step)

    # -- twins: waiting -----------------------------------------------------------------------
    def synced(self, name: str) -> bool:
        """Whether `name` is attached to a master and streaming (its initial sync is done)."""
        for row in self.rows():
            if row.name == name:
                return row.role == "replica" and row.connection == "streaming"
        return False

    def wait_synced(self, *names: str, timeout: float = 30.0) -> Handle[None]:
        """Wait until each named replica has finished its initial sync and is streaming.

        Raises (in the handle):
            TimeoutError: not all of them were synced within `timeout` seconds.
        """
        self._check_open()
        for name in names:
            self._node(name)

        async def wait() -> None:
            with trio.move_on_after(timeout):
                await _until(lambda: all(self.synced(name) for name in names))
                return
            lagging = [name for name in names if not self.synced(name)]
            raise TimeoutError(f"not synced within {timeout:g} s: {', '.join(lagging)}")

        return self._spawn(f"wait until {', '.join(names)} synced", wait)

    def wait_until(self, predicate: Callable[[], object], timeout: float = 30.0) -> Handle[None]:
        """Wait until ``predicate()`` is true (checked every few milliseconds).

        Raises (in the handle):
            TimeoutError: it stayed false for `timeout` seconds.
        """
        self._check_open()
        what = getattr(predicate, "__name__", "condition")

        async def wait() -> None:
            with trio.move_on_after(timeout):
                await _until(predicate)
                return
            raise TimeoutError(f"{what} still false after {timeout:g} s")

        return self._spawn(f"wait until {what}", wait)

    # -- closing and display ------------------------------------------------------------------
    def close(self) -> None:
        """Stop every node and task of this cluster (the notebook run goes on)."""
        if self._ended:
            self._closed = True
            return
        self._closed = True
        self._scope.cancel()
        if not trio.lowlevel.in_trio_task():
            self._runtime.drive_until(lambda: self._ended, timeout=SYNC_TIMEOUT)

    def report_error(self, what: str, error: BaseException) -> None:
        """Put a failure that happened outside a task (a click's twin) in the log."""
        reason = getattr(error, "stop_reason", None)
        self._add_log(
            what, "error", reason if isinstance(reason, StopReason) else None,
            describe_error(error),
        )  # fmt: skip
        self._notify()

    def dashboard(self) -> Any:
        """Return this cluster's `hakit.widgets.ClusterDashboard` (made once).

        Raises:
            ImportError: the widgets extra (ipywidgets, anywidget) is not installed.
        """
        if self._dashboard is None:
            from .. import widgets

            self._dashboard = widgets.ClusterDashboard(self)
        return self._dashboard

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        parts = []
        for row in self.rows() if self._cluster is not None else []:
            parts.append(f"{row.name}:{row.role}")
        return f"<LiveCluster {self.name!r} seed={self.seed} {state} [{', '.join(parts)}]>"

    def _repr_html_(self) -> str:
        header = (
            "<tr><th>node</th><th>role</th><th>generation</th><th>txid</th>"
            "<th>master</th><th>lag</th><th>connection</th></tr>"
        )
        cells = (
            (r.name if r.process is None else f"{r.name} (process {r.pid}, {r.process})",
             r.role, r.generation, r.txid, r.master or "-",
             "-" if r.lag is None else r.lag, r.connection)
            for r in self.rows()
        )  # fmt: skip
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in cells
        )
        state = "closed" if self._closed else "running"
        return (
            f"<div><b>hakit cluster {html.escape(self.name)}</b> (seed {self.seed}, {state})"
            f"<table>{header}{body}</table></div>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        with contextlib.suppress(ImportError):  # no widgets extra: HTML and text stand in
            bundle.update(self.dashboard()._repr_mimebundle_() or {})
        bundle["text/html"] = self._repr_html_()
        bundle["text/plain"] = repr(self)
        return bundle


async def _until(predicate: Callable[[], object]) -> None:
    """Return once ``predicate()`` is true, looking every `POLL_INTERVAL` seconds.

    Polling, because the conditions read state that many tasks change (statistics, roles);
    a look costs microseconds.
    """
    while True:
        if predicate():
            return
        await trio.sleep(POLL_INTERVAL)


def _cut(network: Any, a: str, b: str) -> bool:
    """Whether the simulated network cuts (partition or hold) the link between `a` and `b`."""
    is_cut = getattr(network, "_is_cut", None)
    return bool(is_cut(frozenset((a, b)))) if is_cut is not None else False


_live: dict[str, LiveCluster] = {}


def open_cluster(
    *, seed: int = 0, name: str = "hakit", latency: tuple[float, float] = DEFAULT_LATENCY
) -> LiveCluster:
    """Start a live cluster in the notebook's trio run (starting the run if needed).

    Re-running the cell closes the cluster of the same `name` it opened before, so a
    notebook can be re-run top to bottom.

    Args:
        seed: seeds the simulated network.
        latency: every link's ``(mean, jitter)`` in seconds: a few milliseconds, so that
            messages take time (the timeline shows them unfold, slow motion makes them
            visible, and the same seed replays the same run).
        name: the cluster name its nodes share (and what a re-run replaces).
    """
    old = _live.pop(name, None)
    if old is not None:
        old.close()
    live = LiveCluster(runtime(), seed=seed, name=name, latency=latency)
    _live[name] = live
    return live


def close_clusters() -> None:
    """Close every live cluster."""
    for live in list(_live.values()):
        live.close()
    _live.clear()
