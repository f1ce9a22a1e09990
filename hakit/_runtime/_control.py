"""An operated node: the runner that keeps its role, and the control service operators call.

The runner keeps the node in the role an operator asks for; ``hakit status``, ``hakit put``,
``hakit promote``... talk to the control service.

The control service answers channel requests flagged ``ChannelFlags.CONTROL`` on the node's
own channel endpoint, so it is reached at the node's address under the same authentication
and TLS as every other link, and never mixes with the application's message handler. A
request is ``[op, msgpack(args)]``; the answer one msgpack map: ``{"ok": True, ...}`` or
``{"ok": False, "error": <exception class>, "message": <text>}``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import secrets
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from ..protocol import (
    HAIOError,
    HakitError,
    HAProtocolError,
    InvalidArgumentError,
    KilledByReplicaError,
    NetworkTimeoutError,
    RemoteProtocolError,
    ReplicationError,
    StopReason,
)
from ..protocol import _channel as ch
from ..protocol import _messages as m
from ..transports import FramedStream, SimulatedNetwork
from ._channels import ChannelMessage
from ._events import ChannelConnected, ChannelDisconnected, Event
from ._node import Node
from ._params import MasterParams, ReplicaMode, ReplicaParams, Role
from ._security import NO_SECURITY, AuthenticationFailed, Security, open_secure

#: The name a control client gives in its channel hello.
CLIENT_NAME = "hakit-cli"
#: Events a `watch` keeps for late readers.
_JOURNAL_LENGTH = 4096
#: How long one `events` request waits for news before answering with none.
_LONG_POLL = 2.0
_RETRY_MIN, _RETRY_MAX = 0.2, 2.0


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# -- what an operated node reports --------------------------------------------------------------
def is_reported(event: Event) -> bool:
    """Whether an event belongs in the node's printed log and in ``watch``.

    Channel connections opening and closing are left out: every control request is one, and
    they would drown the attaches, syncs, role changes and stops an operator follows.
    """
    return not isinstance(event, ChannelConnected | ChannelDisconnected)


class Journal:
    """The reported events of one node, numbered, with wall-clock times, for ``watch``."""

    def __init__(self, on_line: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=_JOURNAL_LENGTH)
        self._count = 0
        self._news = trio.Event()
        self._on_line = on_line

    def __call__(self, event: Event) -> None:
        """The node's event sink."""
        if not is_reported(event):
            return
        self._count += 1
        entry = {
            "seq": self._count,
            "time": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
            "node": event.node,
            "event": type(event).__name__,
            "text": event.describe(),
        }
        self._entries.append(entry)
        if self._on_line is not None:
            self._on_line(entry)
        self._news.set()
        self._news = trio.Event()

    async def since(self, after: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        """The entries numbered above `after` (waiting up to `wait` s for one), and the count."""
        if self._count <= after and wait > 0:
            with trio.move_on_after(wait):
                await self._news.wait()
        return [e for e in self._entries if e["seq"] > after], self._count


def format_line(entry: dict[str, Any]) -> str:
    """One journal entry as the line ``hakit node`` and ``hakit watch`` print."""
    return f"{entry['time']} {entry['node']}: {entry['text']}"


# -- the runner ---------------------------------------------------------------------------------
class PlanKind(enum.Enum):
    """What the operator asked the node to be."""

    IDLE = "idle"
    MASTER = "master"
    REPLICA = "replica"


@dataclass(eq=False)
class Plan:
    """One request of the operator, and how its first attempt went."""

    kind: PlanKind
    master: str | None = None
    force: bool = False
    settled: trio.Event = dataclasses.field(default_factory=trio.Event)
    outcome: str = ""
    failed: bool = False

    def settle(self, outcome: str, *, failed: bool = False) -> None:
        if not self.settled.is_set():
            self.outcome, self.failed = outcome, failed
            self.settled.set()


class NodeRunner:
    """Keeps a node in the role its operator asked for (the body of ``hakit node``).

    A master serves replicas; a replica attaches to its master and, when the link is lost,
    attaches again with backoff (so an operator can `promote` it or point it elsewhere);
    a force master makes it the master. Every change the operator asks (`set_plan`) ends
    the current role gracefully first.

    Args:
        node: the node, already listening.
        master_params: how it serves replicas when it is a master.
        replica_params: how it attaches when it is a replica.
        attach_timeout: seconds each attach may take to reach its master.
        once: a replica stops for good when its first attach ends (``hakit node --once``).
    """

    def __init__(
        self,
        node: Node,
        *,
        master_params: MasterParams | None = None,
        replica_params: ReplicaParams | None = None,
        attach_timeout: float = 10.0,
        once: bool = False,
    ) -> None:
        self.node = node
        self.master_params = master_params or MasterParams()
        self.replica_params = replica_params or ReplicaParams()
        self.attach_timeout = attach_timeout
        self.once = once
        self.plan = Plan(PlanKind.IDLE)
        self._changed = trio.Event()
        self._shutdown = False
        #: The last stop reason of an attach, if any (the exit status of ``--once``).
        self.last_reason: StopReason | None = None
        #: What ended `run` on its own: the very first attach could not start (refused
        #: handshake; with `once`, any failure), so the node's configuration is wrong.
        self.fatal: ReplicationError | None = None
        self._attempts = 0

    # -- operator requests -----------------------------------------------------------------
    def set_plan(self, plan: Plan) -> Plan:
        """Ask for a new role; the current one ends gracefully first."""
        old, self.plan = self.plan, plan
        old.settle("superseded by another request", failed=True)
        node = self.node
        if node._session is not None:
            node.replica_stop()
        if node.role is Role.MASTER and plan.kind is not PlanKind.MASTER:
            node.stop_master()
        self._wake()
        return plan

    def shutdown(self) -> None:
        """End `run`: the node stops its roles and the process exits."""
        self._shutdown = True
        self.set_plan(Plan(PlanKind.IDLE))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the loop --------------------------------------------------------------------------
    async def run(self, plan: Plan) -> None:
        """Follow `plan`, then every plan the operator sets, until `shutdown`."""
        self.plan = plan
        backoff = _RETRY_MIN
        while not self._shutdown:
            plan = self.plan
            changed = self._changed
            if plan.kind is PlanKind.MASTER:
                await self._serve(plan)
            elif plan.kind is PlanKind.REPLICA:
                retry = await self._attach(plan)
                if self.once and self.plan.kind is PlanKind.IDLE:
                    return
                if retry and self.plan is plan and not self._shutdown:
                    with trio.move_on_after(backoff):
                        await changed.wait()
                    backoff = min(backoff * 2, _RETRY_MAX)
                    continue
            else:
                plan.settle("idle")
                if self.plan is plan and not self._shutdown:
                    await changed.wait()
            backoff = _RETRY_MIN
            if self.once and plan.kind is PlanKind.REPLICA and self.plan.kind is PlanKind.IDLE:
                return

    async def _serve(self, plan: Plan) -> None:
        node = self.node
        if node.role is not Role.MASTER:
            node.set_master_params(self.master_params)
        plan.settle(f"{node.name} is the master (generation {node.generation})")
        try:
            await node.serve_replicas()
        except KilledByReplicaError as exc:
            if self.plan is plan:
                self.plan = Plan(PlanKind.IDLE)
            plan.settle(str(exc))
        else:
            if self.plan is plan and node.role is not Role.MASTER:
                self.plan = Plan(PlanKind.IDLE)

    async def _attach(self, plan: Plan) -> bool:
        """One attach; return whether to try again (the link was lost, not stopped)."""
        node = self.node
        assert plan.master is not None
        mode = self.replica_params.mode
        mode = mode | ReplicaMode.FORCE_MASTER if plan.force else mode & ~ReplicaMode.FORCE_MASTER
        params = dataclasses.replace(self.replica_params, mode=mode)
        user_callback = self.replica_params.on_notification

        def notified(what: Any, detail: str) -> None:
            if what.name == "CONNECTED" and not plan.force:
                plan.settle(f"{node.name} is attached to {plan.master}")
            elif what.name == "MASTER_CHANGED" and detail:
                plan.master = detail  # follow the new master when this link is lost too
            if user_callback is not None:
                user_callback(what, detail)

        params = dataclasses.replace(params, on_notification=notified)
        try:
            reason = await node.attach_master(plan.master, params, timeout=self.attach_timeout)
        except (NetworkTimeoutError, HAIOError, HAProtocolError) as exc:
            first = self._attempts == 0
            self._attempts += 1
            self.last_reason = exc.stop_reason
            plan.settle(str(exc), failed=True)
            if first and (self.once or isinstance(exc, HAProtocolError)):
                self.fatal = exc
                self._shutdown = True
                return False
            if self.once or isinstance(exc, AuthenticationFailed):
                self.plan = Plan(PlanKind.IDLE)
                return False
            return self.plan is plan
        self._attempts += 1
        self.last_reason = reason
        if reason is StopReason.BECOMES_MASTER:
            plan.settle(f"{node.name} is the master (generation {node.generation})")
            if self.plan is plan:
                self.plan = Plan(PlanKind.MASTER)
            return False
        if plan.force:
            plan.settle(f"force master failed: {reason.name} - {reason.describe()}", failed=True)
        else:
            plan.settle(f"attach ended: {reason.name}", failed=reason is not StopReason.CANCELLED)
        if self.plan is not plan:
            return False
        if reason is StopReason.CONNECTION_ABORTED and not self.once:
            if plan.force:  # the master went away mid-handover: keep following it plainly
                self.plan = plan = Plan(PlanKind.REPLICA, plan.master)
            return True
        self.plan = Plan(PlanKind.IDLE)
        return False


# -- the control service ------------------------------------------------------------------------
class ControlService:
    """Answers operator requests for one node (see the module docstring).

    Args:
        node: the node.
        runner: its runner (role changes); without one only reads, writes and stops work.
        journal: its reported events (``watch``).
    """

    def __init__(self, node: Node, runner: NodeRunner | None, journal: Journal | None) -> None:
        self.node = node
        self.runner = runner
        self.journal = journal
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": self._status,
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "detach": self._detach,
            "stop": self._stop,
            "cancel": self._cancel,
            "force-master": self._force_master,
            "promote": self._promote,
            "attach": self._attach,
            "events": self._events,
        }

    def install(self) -> None:
        """Answer control requests on the node's channel endpoint from now on."""
        self.node._channels.control = self.handle

    async def handle(self, msg: ChannelMessage) -> None:
        """The channel handler of control requests."""
        if not msg.need_response:
            return
        try:
            op = msg.parts[0].decode() if msg.parts else ""
            args = _unpack(msg.parts[1]) if len(msg.parts) > 1 else {}
            if not isinstance(args, dict):
                raise InvalidArgumentError("control arguments must be a map")
            if op == "shutdown":
                await msg.respond(_pack({"ok": True, "message": f"{self.node.name} stops"}))
                self._require_runner().shutdown()
                return
            action = self._ops.get(op)
            if action is None:
                raise InvalidArgumentError(f"unknown control operation {op!r}")
            result = await action(args)
            reply = {"ok": True, **result}
        except (HakitError, ValueError, TypeError, UnicodeDecodeError) as exc:
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        await msg.respond(_pack(reply))

    def _require_runner(self) -> NodeRunner:
        if self.runner is None:
            raise InvalidArgumentError(f"node {self.node.name!r} takes no role changes here")
        return self.runner

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        stats = dataclasses.asdict(self.node.statistics())
        session = self.node._session
        stats["master_address"] = session.master_address if session else None
        stats["plan"] = self.runner.plan.kind.value if self.runner else None
        return {"status": stats}

    async def _get(self, args: dict[str, Any]) -> dict[str, Any]:
        key = _key(args)
        missing = object()
        value = self.node.get(key, missing)
        if value is missing:
            return {"found": False}
        return {"found": True, "value": value}

    async def _put(self, args: dict[str, Any]) -> dict[str, Any]:
        async with self.node.transaction() as tx:
            tx.put(_key(args), args.get("value"))
        return self._committed(tx.result)

    async def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        async with self.node.transaction() as tx:
            tx.delete(_key(args))
        return self._committed(tx.result)

    def _committed(self, result: Any) -> dict[str, Any]:
        if result is None:
            return {"txid": self.node.txid, "acked": [], "detached": []}
        return {"txid": result.txid, "acked": list(result.acked), "detached": list(result.detached)}

    async def _detach(self, args: dict[str, Any]) -> dict[str, Any]:
        replica = args.get("replica")
        if replica is None:
            names = self.node.replicas
            self.node.detach_all_replicas()
            return {"message": f"detached {', '.join(names) or 'no replica'}"}
        self.node.detach_replica(str(replica))
        return {"message": f"detached {replica}"}

    async def _stop(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._end_replication(graceful=True)

    async def _cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._end_replication(graceful=False)

    async def _end_replication(self, *, graceful: bool) -> dict[str, Any]:
        node = self.node
        if node._session is None:
            raise InvalidArgumentError(f"node {node.name!r} is not attached to a master")
        if self.runner is not None:
            self.runner.plan.settle("stopped", failed=True)
            self.runner.plan = Plan(PlanKind.IDLE)
        if graceful:
            node.replica_stop()
        else:
            node.cancel()
        return {"message": f"{node.name} stops replicating"}

    async def _force_master(self, args: dict[str, Any]) -> dict[str, Any]:
        runner = self._require_runner()
        node = self.node
        session = node._session
        if node.role is not Role.REPLICA or session is None or session.master_address is None:
            raise InvalidArgumentError(
                f"node {node.name!r} is not attached to a master (it is {node.role.value}); "
                "force-master takes over from a live master: use promote when it is gone"
            )
        plan = runner.set_plan(Plan(PlanKind.REPLICA, session.master_address, force=True))
        return await self._settled(plan, float(args.get("wait", 10.0)))

    async def _promote(self, args: dict[str, Any]) -> dict[str, Any]:
        runner = self._require_runner()
        node = self.node
        if node.role is Role.MASTER:
            raise InvalidArgumentError(f"node {node.name!r} is already the master")
        if node.role is Role.REPLICA:
            session = node._session
            where = session.master_address if session else "?"
            raise InvalidArgumentError(
                f"node {node.name!r} is attached to its live master at {where}: "
                "use force-master, which hands over without losing a write"
            )
        plan = runner.set_plan(Plan(PlanKind.MASTER))
        return await self._settled(plan, float(args.get("wait", 10.0)))

    async def _attach(self, args: dict[str, Any]) -> dict[str, Any]:
        runner = self._require_runner()
        master = args.get("master")
        if not isinstance(master, str) or not master:
            raise InvalidArgumentError("attach needs the master's address")
        if master == self.node.address:
            raise InvalidArgumentError(f"node {self.node.name!r} cannot attach to itself")
        plan = runner.set_plan(Plan(PlanKind.REPLICA, master))
        return await self._settled(plan, float(args.get("wait", 10.0)))

    async def _settled(self, plan: Plan, timeout: float) -> dict[str, Any]:
        with trio.move_on_after(timeout):
            await plan.settled.wait()
        if not plan.settled.is_set():
            return {"message": f"still in progress after {timeout:g} s", "done": False}
        if plan.failed:
            raise InvalidArgumentError(plan.outcome)
        return {"message": plan.outcome, "done": True}

    async def _events(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.journal is None:
            return {"events": [], "count": 0}
        wait = min(float(args.get("wait", _LONG_POLL)), _LONG_POLL)
        events, count = await self.journal.since(int(args.get("after", 0)), wait)
        return {"events": events, "count": count}


def _key(args: dict[str, Any]) -> str | bytes:
    key = args.get("key")
    if not isinstance(key, str | bytes):
        raise InvalidArgumentError("a key must be given, as a string")
    return key


# -- the client ---------------------------------------------------------------------------------
class ControlError(HakitError):
    """A control request failed on the node (its message says why).

    Attributes:
        error: the class name of the error raised on the node.
    """

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class ControlClient:
    """One connection to a node's control service (``async with ControlClient(...)``).

    Raises (on entry):
        HAProtocolError: the authentication failed.
        HAIOError: the node could not be reached or refused the connection.
    """

    def __init__(
        self,
        address: str,
        *,
        security: Security = NO_SECURITY,
        timeout: float = 10.0,
        network: SimulatedNetwork | None = None,
        cluster: str = "hakit",
    ) -> None:
        self.address = address
        self.security = security
        self.timeout = timeout
        self.network = network
        self.cluster = cluster
        self._framed: FramedStream | None = None
        self._req_id = 0

    async def __aenter__(self) -> ControlClient:
        address = self.address
        try:
            with trio.fail_after(self.timeout):
                framed = await open_secure(
                    address,
                    self.security,
                    network=self.network,
                    source=f"{CLIENT_NAME}-{secrets.token_hex(3)}",
                    max_frame_size=16 * 1024 * 1024,
                )
                hello = m.ChannelHello(0, CLIENT_NAME, self.cluster, m.PROTOCOL_VERSION)
                try:
                    await framed.send(hello.encode())
                    values = await framed.receive()
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(framed.stream)
                    raise
        except trio.TooSlowError:
            raise NetworkTimeoutError(
                f"the node at {address} did not answer within {self.timeout:g} s",
                stop_reason=StopReason.CONNECTION_ABORTED, address=address,
            ) from None  # fmt: skip
        except (OSError, EOFError, trio.BrokenResourceError, RemoteProtocolError) as exc:
            why = str(exc) or str(exc.__cause__ or type(exc).__name__)
            tls = self.security.tls
            if (
                tls is not None
                and tls.server is None
                and isinstance(exc.__cause__ or exc, ssl.SSLError | EOFError)
            ):
                # TLS 1.3 tells a client of a refused client certificate only as a broken
                # read after its handshake: say the likely cause in plain words.
                why += (
                    "; if the node asks for client certificates (mutual TLS), this client "
                    "presents none: give it one (--tls-cert)"
                )
            raise HAIOError(
                f"could not reach the node at {address}: {why}",
                stop_reason=StopReason.CONNECTION_ABORTED, address=address,
            ) from None  # fmt: skip
        reply = m.parse_message(values[0])
        if not isinstance(reply, m.ChannelHello):
            await framed.aclose()
            detail = reply.detail if isinstance(reply, m.ChannelFail | m.Reject) else str(reply)
            raise HAProtocolError(
                f"the node at {address} refused: {detail}",
                stop_reason=StopReason.HANDSHAKE_FAILED, address=address,
            )  # fmt: skip
        self.node_name = reply.node
        self._framed = framed
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._framed is not None:
            with trio.CancelScope(shield=True):
                await self._framed.aclose()
            self._framed = None

    async def request(self, parts: list[bytes], timeout: float | None = None) -> list[bytes]:
        """Send a request to the node's application message handler; return its answer.

        Raises:
            ControlError: the node had no handler, or the handler failed.
            HAIOError, NetworkTimeoutError: as `call`.
        """
        flags = int(ch.ChannelFlags.MULTIPLE)
        return await self._exchange("request", flags, parts, timeout)

    async def call(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one control request and return its answer.

        Raises:
            ControlError: the node refused or failed the request.
            HAIOError: the connection broke.
            NetworkTimeoutError: no answer within the timeout.
        """
        flags = int(ch.ChannelFlags.CONTROL)
        answer = await self._exchange(op, flags, [op.encode(), _pack(args)], timeout)
        return self._answer(answer)

    async def _exchange(
        self, op: str, flags: int, parts: list[bytes], timeout: float | None
    ) -> list[bytes]:
        framed = self._framed
        assert framed is not None, "use ControlClient as an async context manager"
        self._req_id += 1
        req_id = self._req_id
        wait = self.timeout if timeout is None else timeout
        frame = m.encode_channel_msg(0, req_id, flags, 0, parts)
        try:
            with trio.fail_after(wait if math.isfinite(wait) else math.inf):
                await framed.send(frame)
                while True:
                    for value in await framed.receive():
                        reply = m.parse_message(value)
                        if isinstance(reply, m.ChannelReply) and reply.req_id == req_id:
                            answer = reply.parts
                            return answer if isinstance(answer, list) else [answer]
                        if isinstance(reply, m.ChannelFail) and reply.req_id in (0, req_id):
                            raise ControlError(reply.detail, "ChannelFail")
        except trio.TooSlowError:
            raise NetworkTimeoutError(
                f"the node at {self.address} did not answer {op} within {wait:g} s",
                stop_reason=StopReason.CONNECTION_ABORTED, address=self.address,
            ) from None  # fmt: skip
        except (OSError, EOFError, trio.BrokenResourceError, RemoteProtocolError) as exc:
            raise HAIOError(
                f"the connection to {self.address} broke: {exc or type(exc).__name__}",
                stop_reason=StopReason.CONNECTION_ABORTED, address=self.address,
            ) from None  # fmt: skip

    @staticmethod
    def _answer(parts: list[bytes]) -> dict[str, Any]:
        if len(parts) != 1:
            raise ControlError(f"malformed control answer ({len(parts)} parts)")
        answer = _unpack(parts[0])
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ControlError("malformed control answer")
        if not answer["ok"]:
            raise ControlError(str(answer.get("message")), str(answer.get("error", "")))
        return answer
