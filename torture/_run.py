"""Run one schedule on `hakit.open_cluster` under trio's `MockClock`, and check the outcome.

The harness drives only public hakit calls, each guarded by its precondition (stop only an
attached node, promote only a standalone one), so that any exception a call raises outside
its documented contract is the engine's, never the harness's. What it records (every commit
and how it ended, every attach and why it stopped) goes to `torture._check` once the faults
have ended and every node was brought back to the final master.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

import hakit
from hakit import (
    AckPolicy,
    MasterMode,
    MasterParams,
    ReplicaMode,
    ReplicaParams,
    Role,
    StopReason,
)

from ._schedule import Config, Step, check_step

#: What a commit may raise (DESIGN 4.5 and the `Transaction` docs): anything else is a
#: contract violation.
COMMIT_ERRORS = (hakit.NotMasterError, hakit.NoQuorumError, hakit.CommitFailedError)
#: What `attach_master` may raise; each carries a `StopReason` in ``.stop_reason``.
ATTACH_ERRORS = (hakit.NetworkTimeoutError, hakit.HAProtocolError, hakit.HAIOError)
#: Virtual seconds allowed, once the faults end, for writes to return and replicas to sync.
SETTLE = 30.0
#: Wall-clock seconds one schedule may take before it counts as hung.
WALL_LIMIT = 60.0


@dataclass(frozen=True)
class Violation:
    """One broken property.

    Attributes:
        kind: ``lost`` (a), ``two-writers`` (b), ``diverged`` (c), ``crash`` (d),
            ``contract`` (e), or ``liveness`` (a write or an attach that never ends, a
            replica that never syncs once the faults are over).
        detail: what was seen.
    """

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.detail}"


@dataclass
class Write:
    """One transaction the harness committed, and how it ended."""

    node: str
    keys: tuple[str, ...]
    value: str
    sync: bool  # the master was in synchronous mode when the write began
    result: hakit.CommitResult | None = None
    error: str | None = None


@dataclass
class Attach:
    """One `attach_master` call."""

    node: str
    master: str
    force: bool
    owner: hakit.Node | None = None  # the node object (a restart makes a new one)
    #: FORCE_SYNC: the operator gives up the node's own branch (see `Harness.converge`)
    sync: bool = False
    requested: set[StopReason] = field(default_factory=set)
    done: trio.Event = field(default_factory=trio.Event)
    reason: StopReason | None = None
    error: str | None = None


@dataclass
class Outcome:
    """What a run saw: its violations and a few counts."""

    config: Config
    steps: list[Step]
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no property was broken."""
        return not self.violations

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of the violations."""
        return frozenset(v.kind for v in self.violations)


class _Hung(BaseException):
    """Raised by the wall-clock alarm: the run made no progress in virtual time."""


class Harness:
    """The state of one run: the cluster, the background tasks and what they recorded."""

    def __init__(self, config: Config, cluster: hakit.Cluster, nursery: trio.Nursery) -> None:
        self.config = config
        self.cluster = cluster
        self.nursery = nursery
        self.nodes: dict[str, hakit.Node] = {}
        self.attaching: dict[str, Attach] = {}
        self.attaches: list[Attach] = []
        self.writes: list[Write] = []
        self.violations: list[Violation] = []
        self.former_masters: set[str] = set()
        self.refused_promotions = 0
        #: Names crashed at least once (NodeClosedError is then within the contract for
        #: their writes and attaches, as `Cluster.crash` documents).
        self.crashed: set[str] = set()
        #: Acknowledged keys not on the final master but kept in some node's discarded().
        self.discarded_acknowledged = 0
        self.writes_running = 0
        self.writes_idle = trio.Event()
        self._keys = 0
        mode = MasterMode.HOTSYNC | (MasterMode.STATEFUL if config.stateful else MasterMode.NONE)
        self.base_params = MasterParams(
            mode=mode,
            ack_policy=AckPolicy[config.ack_policy],
            quorum=config.quorum,
            synch_timeout=config.synch_timeout,
            keepalive_interval=config.keepalive_interval,
            detach_timeout=1.0,
            commit_timeout=1.0,
            initial_timeout=5.0,
            disable_writes_on_kill=config.disable_writes_on_kill,
        )

    def violation(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))

    # -- lookups -------------------------------------------------------------------------
    def master(self) -> hakit.Node | None:
        """The node the schedule's ``"*"`` means: the master of the highest generation."""
        down = self.cluster.network.is_down
        masters = [n for n in self.nodes.values() if n.role is Role.MASTER and not down(n.name)]
        return max(masters, key=lambda n: (n.generation, n.name)) if masters else None

    def resolve(self, name: str) -> hakit.Node | None:
        return self.master() if name == "*" else self.nodes[name]

    def replica_params(self, force: bool, sync: bool = False) -> ReplicaParams:
        mode = ReplicaMode.FORCE_MASTER if force else ReplicaMode.NONE
        return ReplicaParams(
            mode=mode | ReplicaMode.FORCE_SYNC if sync else mode,
            initial_timeout=5.0,
            commit_timeout=1.0,
            wait_data_timeout=self.config.wait_data_timeout,
            master_params=self.base_params,
        )

    # -- background tasks ------------------------------------------------------------------
    def start_write(self, node: hakit.Node, count: int) -> None:
        keys = tuple(f"k{self._keys + i}" for i in range(count))
        self._keys += count
        params = node.master_params
        sync = (
            node.role is Role.MASTER
            and params is not None
            and MasterMode.ASYNC not in params.mode
            and params.ack_policy is not AckPolicy.NONE
        )
        write = Write(node.name, keys, f"{node.name}:{keys[0]}", sync)
        self.writes.append(write)
        self.writes_running += 1
        self.nursery.start_soon(self._write, node, write)

    async def _write(self, node: hakit.Node, write: Write) -> None:
        try:
            async with node.transaction() as tx:
                for key in write.keys:
                    tx.put(key, write.value)
            write.result = tx.result
            self._check_ack(node, write)
        except COMMIT_ERRORS as exc:
            write.error = f"{type(exc).__name__}: {exc}"
        except hakit.NodeClosedError as exc:
            write.error = f"{type(exc).__name__}: {exc}"
            if node.name not in self.crashed:
                self.violation("contract", f"a commit on {node.name} raised {write.error}")
        except Exception as exc:
            write.error = f"{type(exc).__name__}: {exc}"
            self.violation("contract", f"a commit on {node.name} raised {write.error}")
        finally:
            self.writes_running -= 1
            if not self.writes_running:
                self.writes_idle.set()
                self.writes_idle = trio.Event()

    def _check_ack(self, master: hakit.Node, write: Write) -> None:
        # An acknowledgement means applied: a replica still attached to this master that
        # acked the write must hold it by the time the commit returns.
        result = write.result
        if result is None:
            return
        for name in result.acked:
            replica = self.nodes[name]
            attached = replica.role is Role.REPLICA and replica.statistics().master == master.name
            if attached and replica.txid < result.txid:
                self.violation(
                    "contract",
                    f"{name} acknowledged txid {result.txid} of {master.name} but holds "
                    f"only txid {replica.txid}",
                )

    async def attach(
        self, node: hakit.Node, *, force: bool = False, sync: bool = False
    ) -> Attach | None:
        """Start `node`'s attach to the current master in the background, if it can attach."""
        target = self.master()
        if node.name in self.attaching or node.role is not Role.STANDALONE:
            return None
        if target is None or target is node or target.address is None:
            return None
        if self.cluster.network.is_down(node.name):
            return None
        record = Attach(node.name, target.name, force, node, sync=sync)
        await self.nursery.start(self._attach, node, target.address, record)
        return record

    async def _attach(
        self,
        node: hakit.Node,
        address: str,
        record: Attach,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.attaching[node.name] = record
        self.attaches.append(record)
        # started() does not yield: attach_master runs on until its first checkpoint, so
        # its session exists by the time the schedule goes on (stop/cancel can reach it).
        task_status.started()
        try:
            params = self.replica_params(record.force, record.sync)
            reason = await node.attach_master(address, params, timeout=1.0)
        except ATTACH_ERRORS as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc.stop_reason, StopReason):
                self.violation("contract", f"{record.error} carries no StopReason")
        except hakit.NodeClosedError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            if node.name not in self.crashed:
                self.violation("contract", f"attach_master on {node.name} raised {record.error}")
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            self.violation("contract", f"attach_master on {node.name} raised {record.error}")
        else:
            record.reason = reason
            self._check_reason(node, record, reason)
        finally:
            del self.attaching[node.name]
            record.done.set()

    def _check_reason(self, node: hakit.Node, record: Attach, reason: object) -> None:
        what = f"attach_master on {node.name} returned {reason!r}"
        if not isinstance(reason, StopReason):
            self.violation("contract", f"{what}, not a StopReason")
        elif reason is StopReason.BECOMES_MASTER:
            if not record.force:
                self.violation("contract", f"{what} without FORCE_MASTER")
            elif node.role is not Role.MASTER:
                self.violation("contract", f"{what} but the node is {node.role.value}")
            else:
                self.former_masters.add(node.name)
        elif reason in (StopReason.STOPPED_BY_LOCAL_REQUEST, StopReason.CANCELLED):
            if reason not in record.requested:
                self.violation("contract", f"{what}, which nobody requested")
        elif reason is StopReason.ITERATOR_ERROR:
            self.violation("contract", f"{what} with no on_transaction callback")

    async def end_attach(self, name: str) -> bool:
        """Cancel `name`'s attach, if any, and wait for it to end; False if it never ends."""
        record = self.attaching.get(name)
        if record is None:
            return True
        if record.owner is self.nodes[name] and not self.cluster.network.is_down(name):
            record.requested.add(StopReason.CANCELLED)
            self.nodes[name].cancel()
        with trio.move_on_after(10):
            await record.done.wait()
            return True
        self.violation("liveness", f"the attach of {name} did not end within 10 s of cancel()")
        return False

    # -- the steps -------------------------------------------------------------------------
    async def step(self, step: Step) -> None:
        op, *args = step[:-1]
        network = self.cluster.network
        if op == "write":
            node = self.resolve(args[0])
            if node is not None and not network.is_down(node.name):
                self.start_write(node, args[1])
        elif op == "mode":
            node = self.resolve(args[0])
            if node is not None and node.role is Role.MASTER and node.master_params:
                base = node.master_params.mode & ~MasterMode.ASYNC
                mode = base | MasterMode.ASYNC if args[1] == "async" else base
                node.set_master_params(dataclasses.replace(node.master_params, mode=mode))
        elif op == "attach":
            await self.attach(self.nodes[args[0]])
        elif op in ("stop", "cancel"):
            record = self.attaching.get(args[0])
            node = self.nodes[args[0]]
            if record is not None and record.owner is node and not network.is_down(node.name):
                if op == "stop":
                    record.requested.add(StopReason.STOPPED_BY_LOCAL_REQUEST)
                    node.replica_stop()
                else:
                    record.requested.add(StopReason.CANCELLED)
                    node.cancel()
        elif op == "detach":
            for master in self.nodes.values():
                alive = not network.is_down(master.name)
                if alive and master.role is Role.MASTER and args[0] in master.replicas:
                    master.detach_replica(args[0])
        elif op == "detach_all":
            master = self.master()  # never a crashed one
            if master is not None:
                master.detach_all_replicas()
        elif op == "force":
            node = self.nodes[args[0]]
            down = network.is_down(node.name)
            if not down and node.role is not Role.MASTER and await self.end_attach(node.name):
                await self.attach(node, force=True)
        elif op == "stop_master":
            node = self.nodes[args[0]]
            if node.role is Role.MASTER and not network.is_down(node.name):
                node.stop_master()
        elif op == "promote":
            node = self.nodes[args[0]]
            if (
                node.role is Role.STANDALONE
                and node.name not in self.attaching
                and node.name in self.former_masters
                and not network.is_down(node.name)
            ):
                try:
                    node.set_master_params(self.base_params)
                except hakit.LocalProtocolError:
                    # Documented: a master that stepped down is promoted again only after
                    # it resynced from the newer master.
                    self.refused_promotions += 1
        elif op == "partition":
            network.partition(args[0], args[1])
        elif op == "heal":
            network.heal()
        elif op == "hold":
            network.hold(args[0], args[1])
        elif op == "release":
            network.release(args[0], args[1])
        elif op == "latency":
            names = list(self.nodes)
            network.set_latency(names, names, args[0], args[1])  # every link
        elif op == "loss":
            network.set_loss(args[0], args[1], args[2])
        elif op == "crash":
            if not network.is_down(args[0]):
                self.crashed.add(args[0])
                await self.cluster.crash(args[0])
        elif op == "restart":
            if network.is_down(args[0]):
                self.nodes[args[0]] = await self.cluster.restart(args[0])
        else:  # pragma: no cover - check_step refused it
            raise AssertionError(op)

    # -- the end: faults stop, every node rejoins one master -------------------------------
    async def converge(self) -> hakit.Node | None:
        """End the faults and bring every node back to one master; return that master."""
        network = self.cluster.network
        for name in list(self.nodes):
            if network.is_down(name):
                self.nodes[name] = await self.cluster.restart(name)
        network.heal()
        names = list(self.nodes)
        network.set_loss(names, names, 0.0)
        for a in self.nodes:
            for b in self.nodes:
                if a < b:
                    network.release(a, b)
        network.set_latency(list(self.nodes), list(self.nodes), 0.0)
        if self.writes_running:
            with trio.move_on_after(SETTLE):
                while self.writes_running:
                    await self.writes_idle.wait()
            if self.writes_running:
                self.violation(
                    "liveness",
                    f"{self.writes_running} write(s) still running {SETTLE:g} s after the "
                    "faults ended",
                )
        await trio.sleep(3.0)  # let links notice the heal, keepalives flow, stops finish
        final = await self._choose_final()
        for attempt in range(3):
            if final is None:
                return None
            others = [n for n in self.nodes.values() if n is not final]
            for node in others:
                if node.role is Role.MASTER:
                    node.stop_master()
            for node in others:
                if not self._joined(node, final):
                    record = self.attaching.get(node.name)
                    if record is not None and record.master != final.name:
                        await self.end_attach(node.name)
                    if node.name not in self.attaching:
                        await self.attach(node, sync=self._holds_own_branch(node))
            with trio.move_on_after(SETTLE / 3):
                # Polling in virtual time: no one event says "every node caught up".
                while not all(self._joined(n, final) for n in others):
                    if final.role is not Role.MASTER:
                        break
                    await trio.sleep(0.05)
            if all(self._joined(n, final) for n in others):
                await self._final_write(final, others)
                break
            if final.role is not Role.MASTER and attempt < 2:
                # A rejoining node proved it stale (it was promoted from the final master's
                # history, by hand, beside it): the master stepped down, as it must, and the
                # operator promotes another.
                await trio.sleep(1.0)
                final = await self._choose_final()
                continue
            if attempt == 2:
                for node in others:
                    if not self._joined(node, final):
                        last = [a for a in self.attaches if a.node == node.name][-1:]
                        how = f"last attach: {last[0].reason or last[0].error}" if last else ""
                        self.violation(
                            "liveness",
                            f"{node.name} ({node.role.value}, gen {node.generation}, txid "
                            f"{node.txid}) did not sync with final master {final.name} (gen "
                            f"{final.generation}, txid {final.txid}) once the faults ended; "
                            f"{how}",
                        )
        return final

    async def _choose_final(self) -> hakit.Node | None:
        """The master every node rejoins: the current one, or the one the operator promotes."""
        final = self.master()
        if final is not None:
            final.set_master_params(self.base_params)  # sync commits again
            return final
        # No master left (all stepped down): the operator promotes the most up to date
        # node that may be promoted (a deposed master may not, until it resynced).
        candidates = sorted(
            self.nodes.values(),
            key=lambda n: (n.storage.last_generation, n.txid, n.generation, n.name),
            reverse=True,
        )
        for candidate in candidates:
            if not await self.end_attach(candidate.name):
                return None
            try:
                candidate.set_master_params(self.base_params)
            except hakit.LocalProtocolError:
                continue
            return candidate
        self.violation("liveness", "no node accepts to become the master at the end")
        return None

    async def _final_write(self, final: hakit.Node, others: list[hakit.Node]) -> None:
        # Liveness once healed: a write on the final master commits and reaches everyone.
        self.start_write(final, 1)
        write = self.writes[-1]
        # SETTLE, not less: a chunk lost before the heal may still wait out TCP's doubling
        # retransmission timeouts (up to ~12.6 s on the simulated network) after it.
        with trio.move_on_after(SETTLE):
            while self.writes_running:
                await self.writes_idle.wait()
            while not all(self._joined(n, final) for n in others):  # noqa: ASYNC110
                await trio.sleep(0.05)
        if write.result is None:
            self.violation(
                "liveness", f"a write on the final master {final.name} failed: {write.error}"
            )
        elif not all(self._joined(n, final) for n in others):
            behind = [n.name for n in others if not self._joined(n, final)]
            self.violation("liveness", f"the last write never reached {', '.join(behind)}")

    def _holds_own_branch(self, node: hakit.Node) -> bool:
        """Whether the final master refused `node` for a branch of its own.

        A node promoted by hand beside the master reached a newer generation: as the refusal
        says, its operator gives that branch up with FORCE_SYNC (what it discards stays in
        `node.discarded()`, which the checker counts).
        """
        last = [a for a in self.attaches if a.node == node.name][-1:]
        return bool(last) and "attach with FORCE_SYNC" in (last[0].error or "")

    @staticmethod
    def _joined(node: hakit.Node, final: hakit.Node) -> bool:
        # Both ends must agree: a replica may not yet know that the master dropped its link.
        return (
            node.role is Role.REPLICA
            and node.statistics().master == final.name
            and node.name in final.replicas
            and node.txid == final.txid
        )


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's scheduler order reproducible for this run.

    As trio does under Hypothesis: each batch of runnable tasks is sorted, then shuffled by
    trio's module RNG, which is seeded here.
    """
    run_module: Any = trio._core._run
    saved = run_module._ALLOW_DETERMINISTIC_SCHEDULING, run_module._r.getstate()
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_module._r.seed(seed)
    try:
        yield
    finally:
        run_module._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]
        run_module._r.setstate(saved[1])


@contextlib.contextmanager
def _wall_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise _Hung()

    try:
        previous = signal.signal(signal.SIGALRM, alarm)
    except ValueError:  # not the main thread: no alarm
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(config: Config, steps: list[Step]) -> Outcome:
    """Run one schedule and check it; never raises for what the engine does."""
    from ._check import check

    for step in steps:
        check_step(step)
    outcome = Outcome(config, list(steps))
    holder: list[Harness] = []
    with tempfile.TemporaryDirectory(prefix="hakit-torture-") as tmp:

        async def main() -> None:
            async with (
                hakit.open_cluster(seed=config.seed) as cluster,
                trio.open_nursery() as nursery,
            ):
                harness = Harness(config, cluster, nursery)
                holder.append(harness)
                for name in config.names:
                    path = Path(tmp) / f"{name}.db"
                    storage = hakit.SqliteStorage(path) if config.sqlite else None
                    harness.nodes[name] = await cluster.add_node(name, storage=storage)
                first = harness.nodes[config.names[0]]
                first.set_master_params(harness.base_params)
                harness.former_masters.add(first.name)
                for name in config.names[1:]:
                    await harness.attach(harness.nodes[name])
                await trio.sleep(0.5)
                for step in steps:
                    await harness.step(step)
                    await trio.sleep(step[-1])
                final = await harness.converge()
                outcome.violations.extend(check(harness, final))
                nursery.cancel_scope.cancel()

        try:
            with _deterministic_trio(config.seed), _wall_limit(WALL_LIMIT):
                trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        except _Hung:
            outcome.violations.append(
                Violation(
                    "liveness", f"the run did not finish within {WALL_LIMIT:g} s of wall time"
                )
            )
        except BaseException as exc:  # a node crashed: its error escaped the cluster
            if isinstance(exc, KeyboardInterrupt) or not _from_hakit(exc):
                raise  # the harness's own bug: fail loudly, never count it as the engine's
            outcome.violations.append(Violation("crash", _describe_crash(exc)))
    if holder:
        harness = holder[0]
        outcome.violations[:0] = harness.violations
        outcome.counts = _counts(harness)
    return outcome


def _leaves(exc: BaseException) -> list[BaseException]:
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        elif not isinstance(e, trio.Cancelled):
            leaves.append(e)

    walk(exc)
    return leaves or [exc]


def _from_hakit(exc: BaseException) -> bool:
    """Whether every error that escaped was raised in hakit's code (a node's task)."""
    return all(
        any("/hakit/" in f.filename for f in traceback.extract_tb(leaf.__traceback__))
        for leaf in _leaves(exc)
    )


def _describe_crash(exc: BaseException) -> str:
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        elif not isinstance(e, trio.Cancelled):
            leaves.append(e)

    walk(exc)
    parts = []
    for leaf in leaves or [exc]:
        frames = traceback.extract_tb(leaf.__traceback__)
        where = next(
            (f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames)
             if "/hakit/" in f.filename),
            "?",
        )  # fmt: skip
        parts.append(f"{type(leaf).__name__}: {leaf} (at {where})")
    return "; ".join(parts)


def _counts(harness: Harness) -> dict[str, int]:
    writes = harness.writes
    return {
        "writes": len(writes),
        "committed": sum(1 for w in writes if w.result is not None),
        "acknowledged": sum(1 for w in writes if w.result is not None and w.result.acked),
        "refused": sum(1 for w in writes if w.error is not None),
        "attaches": len(harness.attaches),
        "promotions": sum(1 for a in harness.attaches if a.reason is StopReason.BECOMES_MASTER),
        "refused_promotions": harness.refused_promotions,
        "discarded_acknowledged": harness.discarded_acknowledged,
    }
