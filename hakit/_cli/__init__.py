"""The command line: ``hakit`` (or ``python -m hakit``).

One module per command group: `_node` runs a node, `_ops` holds the operator commands that
talk to a running node's control service, `_common` the flags and exit statuses they share.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from .._demo import demo
from .._replay import replay_main
from .._version import __version__
from . import _node, _ops
from ._common import EXIT_INTERRUPTED, CliError

_EPILOG = """\
Operator commands reach a node at its address (host:port) under the node's own security:
give them the same --secret-file, and --tls-ca (plus --tls-cert/--tls-key for mutual TLS).

exit status: 0 success, 1 the node refused or failed the request, 2 bad arguments,
3 node unreachable or silent, 4 authentication or handshake refused,
5 address in use (node), 6 bad --sqlite file (node), 130 interrupted.
"""


def _prog() -> str:
    """The program name as the user typed it: ``hakit`` or ``python -m hakit``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "hakit"
    return "python -m hakit" if name in ("__main__.py", "-m", "-c") else name


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    top = argparse.ArgumentParser(
        prog=_prog(),
        description="Run, operate and explore hakit nodes (HA master/replica replication).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo", help="run the narrated three-node demo on TCP loopback",
        description="Run the narrated three-node demo on TCP loopback (127.0.0.1).",
    )  # fmt: skip
    demo_parser.add_argument(
        "--slow", action="store_true", help="pause between steps and lines, to present it"
    )
    demo_parser.set_defaults(run=None)
    replay = commands.add_parser(
        "replay", help="review a saved event log (cluster.events.save)",
        description="Review a saved event log (cluster.events.save), in time order.",
    )  # fmt: skip
    replay.add_argument("path", help="the saved log (JSON lines)")
    replay.add_argument("--all", action="store_true", help="every record, keep-alives too")
    replay.add_argument("--svg", help="also draw the message timeline to this SVG file")
    replay.add_argument("--html", help="also write the interactive timeline to this HTML file")
    replay.set_defaults(run=None)
    _node.add_parser(commands)
    _ops.add_parsers(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hakit`` and ``python -m hakit``."""
    args = parser().parse_args(argv)
    if args.command == "replay":  # no trio run needed: it reads a file
        return replay_main(args.path, show_all=args.all, svg=args.svg, html=args.html)

    async def run() -> int:
        if args.run is None:
            await demo(slow=args.slow)
            return 0
        return int(await args.run(args))

    try:
        try:
            return trio.run(run)
        except BaseExceptionGroup as group:
            raise _single(group) from None
    except CliError as exc:
        print(f"{_prog()}: error: {exc}", file=sys.stderr, flush=True)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a nursery wrapped (or the group itself, when several failed)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
