"""``hakit node``: one operated node in this process (a master, or a replica with --master).

It prints ``NAME listening at ADDRESS`` once it listens, then one timestamped line per
attach, sync, role change and stop, as they happen, and answers the operator commands
(``hakit status``, ``hakit put``, ``hakit promote``...) on its address.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import warnings
from typing import Any, TextIO

import trio

from .._runtime._channels import ChannelMessage
from .._runtime._control import (
    ControlService,
    Journal,
    NodeRunner,
    Plan,
    PlanKind,
    format_line,
)
from .._runtime._node import Node
from .._runtime._params import MasterParams, ReplicaParams
from .._runtime._security import InsecureListenerWarning
from ..protocol import InvalidArgumentError, StopReason
from ..storage import SqliteStorage
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    CliError,
    add_security_flags,
    security_from,
)

#: Exit statuses of ``hakit node`` beyond the shared ones.
EXIT_ADDRESS_IN_USE = 5
EXIT_BAD_STORAGE = 6
#: How often ``--exit-with-parent`` looks whether the parent is still there (seconds).
_PARENT_CHECK = 0.5


async def _echo(msg: ChannelMessage) -> None:
    """``node --echo``: answer every request with its own parts."""
    if msg.need_response:
        # A multi-part request from a requester that accepts one part: respond() refuses,
        # and the requester gets BufferSmallError; nothing more to do here.
        with contextlib.suppress(InvalidArgumentError):
            await msg.respond(*msg.parts)


def add_parser(commands: Any) -> None:
    """Register the ``node`` command."""
    node = commands.add_parser(
        "node",
        help="run one node (a master, or a replica with --master)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node.add_argument("name", help="the node's name, unique in its cluster")
    node.add_argument(
        "--listen", default="127.0.0.1:0", metavar="ADDR",
        help="address to listen on (default: 127.0.0.1:0, a free port)",
    )  # fmt: skip
    node.add_argument("--master", metavar="ADDR", help="attach as a replica to this master")
    node.add_argument("--cluster", default="hakit", help="cluster name (default: hakit)")
    node.add_argument("--sqlite", metavar="FILE", help="keep the database in this SQLite file")
    node.add_argument(
        "--timeout", type=float, default=10.0, metavar="S",
        help="seconds each attach may take to reach the master (default: 10)",
    )  # fmt: skip
    node.add_argument(
        "--wait-data-timeout", type=float, default=5.0, metavar="S",
        help="a master silent this long is taken for gone (default: 5)",
    )  # fmt: skip
    node.add_argument(
        "--once", action="store_true",
        help="a replica exits when its attach ends instead of attaching again "
        "(exit status 0 only if stopped on request)",
    )  # fmt: skip
    node.add_argument(
        "--echo", action="store_true", help="answer message channel requests with their parts"
    )
    node.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop when the process that started this one ends (hakit.spawn_node uses it, so "
        "that a killed notebook kernel leaves no node behind)",
    )  # fmt: skip
    add_security_flags(node, serving=True)
    node.set_defaults(run=run_node)


def _printer(out: TextIO) -> Any:
    def line(entry: dict[str, Any]) -> None:
        print(format_line(entry), file=out, flush=True)

    return line


async def run_node(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the node until ``hakit shutdown``, Ctrl-C, or (with --once) its attach ends."""
    security = security_from(args)
    storage = None
    if args.sqlite:
        try:
            storage = SqliteStorage(args.sqlite)
        except Exception as exc:  # sqlite3 and OS errors alike: report the path and why
            raise CliError(f"cannot open --sqlite {args.sqlite}: {exc}", EXIT_BAD_STORAGE) from None
    journal = Journal(_printer(out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InsecureListenerWarning)
        try:
            node = Node(
                args.name,
                storage=storage,
                cluster_name=args.cluster,
                secret=security.secret,
                tls=security.tls,
                event_sink=journal,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(node._main)
                try:
                    try:
                        await node.listen(args.listen)
                    except OSError as exc:
                        if exc.errno == errno.EADDRINUSE:
                            raise CliError(
                                f"address {args.listen} is already in use", EXIT_ADDRESS_IN_USE
                            ) from None
                        raise CliError(f"cannot listen on {args.listen}: {exc}") from None
                    for warning in caught:
                        print(f"warning: {warning.message}", file=sys.stderr, flush=True)
                    return await _operate(node, args, journal, out)
                finally:
                    await node.aclose()
        except ValueError as exc:  # a malformed --listen or --master address
            raise CliError(str(exc), EXIT_FAILED) from None


async def _operate(node: Any, args: argparse.Namespace, journal: Journal, out: TextIO) -> int:
    if args.echo:
        node.set_msg_dispatch(_echo)
    runner = NodeRunner(
        node,
        master_params=MasterParams(),
        replica_params=ReplicaParams(wait_data_timeout=args.wait_data_timeout),
        attach_timeout=args.timeout,
        once=args.once,
    )
    ControlService(node, runner, journal).install()
    print(f"{node.name} listening at {node.address}", file=out, flush=True)
    plan = Plan(PlanKind.REPLICA, args.master) if args.master else Plan(PlanKind.MASTER)
    async with trio.open_nursery() as nursery:
        if args.exit_with_parent:
            nursery.start_soon(_watch_parent, os.getppid(), runner)
        await runner.run(plan)
        nursery.cancel_scope.cancel()
    if runner.fatal is not None:
        error = runner.fatal
        refused = error.stop_reason is StopReason.HANDSHAKE_FAILED
        raise CliError(str(error), EXIT_REFUSED if refused else EXIT_UNREACHABLE)
    if args.once and args.master:
        return _once_status(runner)
    return EXIT_OK


async def _watch_parent(parent: int, runner: NodeRunner) -> None:
    """Shut the node down once its parent has gone (the child is re-parented then)."""
    # Polling: no file descriptor or signal tells a child that its parent has died.
    while True:
        await trio.sleep(_PARENT_CHECK)
        if os.getppid() != parent:
            runner.shutdown()
            return


def _once_status(runner: NodeRunner) -> int:
    reason = runner.last_reason
    if reason in (StopReason.STOPPED_BY_LOCAL_REQUEST, StopReason.CANCELLED):
        return EXIT_OK
    return EXIT_FAILED
