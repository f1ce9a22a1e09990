"""The command line: ``python -m hakit demo``, ``node`` and ``replay``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import trio

from ._demo import demo
from ._replay import replay_main
from ._runtime._channels import ChannelMessage
from ._runtime._node import open_node
from ._runtime._params import MasterParams, ReplicaParams
from .protocol import InvalidArgumentError
from .storage import SqliteStorage


async def _echo(msg: ChannelMessage) -> None:
    """``node --echo``: answer every request with its own parts."""
    if msg.need_response:
        # A multi-part request from a requester that accepts one part: respond() refuses,
        # and the requester gets BufferSmallError; nothing more to do here.
        with contextlib.suppress(InvalidArgumentError):
            await msg.respond(*msg.parts)


async def run_node(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``python -m hakit node``: one node as a separate process (master or replica)."""
    storage = SqliteStorage(args.sqlite) if args.sqlite else None
    async with open_node(
        args.name, address=args.listen, storage=storage, cluster_name=args.cluster
    ) as node:
        if args.echo:
            node.set_msg_dispatch(_echo)
        print(f"{node.name} listening at {node.address}", file=out, flush=True)
        if args.master:
            params = ReplicaParams(wait_data_timeout=args.wait_data_timeout)
            reason = await node.attach_master(args.master, params, timeout=args.timeout)
            print(
                f"stopped: {reason.name} ({int(reason)}): {reason.describe()}", file=out, flush=True
            )
            return 0
        node.set_master_params(MasterParams())
        await node.serve_replicas()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hakit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the narrated three-node demo on TCP loopback")
    node = commands.add_parser("node", help="run one node (a master, or a replica with --master)")
    node.add_argument("name")
    node.add_argument("--listen", default="127.0.0.1:0", help="address to listen on")
    node.add_argument("--master", help="attach as a replica to this master address")
    node.add_argument("--cluster", default="hakit", help="cluster name")
    node.add_argument("--sqlite", help="keep the database in this SQLite file")
    node.add_argument("--timeout", type=float, default=10.0, help="attach timeout, seconds")
    node.add_argument("--wait-data-timeout", type=float, default=5.0)
    node.add_argument(
        "--echo", action="store_true", help="answer message channel requests with their parts"
    )
    replay = commands.add_parser("replay", help="review a saved event log (cluster.events.save)")
    replay.add_argument("path", help="the saved log (JSON lines)")
    replay.add_argument("--all", action="store_true", help="every record, keep-alives too")
    replay.add_argument("--svg", help="also draw the message timeline to this SVG file")
    replay.add_argument("--html", help="also write the interactive timeline to this HTML file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hakit``."""
    args = _parser().parse_args(argv)
    runner: Callable[[], Awaitable[int | None]]
    if args.command == "replay":  # no trio run needed: it reads a file
        return replay_main(args.path, show_all=args.all, svg=args.svg, html=args.html)
    if args.command == "demo":
        runner = demo
    else:

        async def runner() -> int:
            return await run_node(args)

    try:
        return trio.run(runner) or 0
    except KeyboardInterrupt:
        return 130
