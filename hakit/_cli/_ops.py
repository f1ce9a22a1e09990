"""The operator commands: each one request (or a few) to a running node's control service.

``hakit status|get|put|delete|force-master|promote|attach|stop|cancel|detach|request|watch|
shutdown ADDR ...``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from .._runtime._control import ControlClient, ControlError, format_line
from ..protocol import HAIOError, HAProtocolError, NetworkTimeoutError
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    CliError,
    add_security_flags,
    security_from,
)

Command = Callable[[ControlClient, argparse.Namespace, TextIO], Awaitable[int]]


def _show(value: Any) -> str:
    """A value as the operator reads it: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return json.dumps(value, default=repr)


def _value(args: argparse.Namespace) -> Any:
    if not args.json:
        return args.value
    try:
        return json.loads(args.value)
    except json.JSONDecodeError as exc:
        raise CliError(f"VALUE is not valid JSON: {exc}") from None


# -- the commands ---------------------------------------------------------------------------------
async def _status(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    status = (await client.call("status"))["status"]
    if args.json:
        print(json.dumps(status, indent=2, default=repr), file=out)
        return EXIT_OK
    role = status["role"]
    if status.get("writes_disabled"):
        role += " (writes disabled)"
    print(f"node        {status['name']} at {status['address']}", file=out)
    print(f"role        {role}", file=out)
    if status.get("master"):
        print(f"master      {status['master']} at {status.get('master_address')}", file=out)
    print(f"generation  {status['generation']}", file=out)
    print(f"txid        {status['txid']}  ({status['keys']} keys)", file=out)
    print(
        f"commits     {status['commits']} committed, {status['commit_failures']} failed, "
        f"{status['applied']} applied as a replica",
        file=out,
    )
    replicas = status.get("replicas") or []
    if replicas:
        print(f"replicas    {len(replicas)}", file=out)
        width = max(len(r["replica"]) for r in replicas)
        for r in replicas:
            print(
                f"  {r['replica']:<{width}}  {r['state']:<8} sync {r['sync']:<11} "
                f"acked txid {r['acked_txid']}  lag {r['lag']}  unsent {r['unsent_bytes']} B",
                file=out,
            )
    elif role.startswith("master"):
        print("replicas    none", file=out)
    ch = status.get("channels") or {}
    print(
        f"channels    sent {ch.get('messages_sent', 0)} ({ch.get('requests_sent', 0)} requests, "
        f"{ch.get('requests_failed', 0)} failed, {ch.get('requests_timed_out', 0)} timed out); "
        f"received {ch.get('messages_received', 0)} ({ch.get('requests_received', 0)} requests, "
        f"{ch.get('handler_errors', 0)} handler errors)",
        file=out,
    )
    print(f"refused     {status['refused_connections']} connections", file=out)
    return EXIT_OK


async def _get(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = await client.call("get", key=args.key)
    if not answer["found"]:
        print(f"(no key {args.key!r})", file=sys.stderr)
        return EXIT_FAILED
    print(_show(answer["value"]), file=out)
    return EXIT_OK


def _committed(answer: dict[str, Any], out: TextIO) -> int:
    acked = ", ".join(answer["acked"]) or "no replica"
    line = f"committed txid {answer['txid']}, acknowledged by {acked}"
    if answer["detached"]:
        line += f"; detached for not acknowledging: {', '.join(answer['detached'])}"
    print(line, file=out)
    return EXIT_OK


async def _put(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    return _committed(await client.call("put", key=args.key, value=_value(args)), out)


async def _delete(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    return _committed(await client.call("delete", key=args.key), out)


def _simple(op: str, *names: str) -> Command:
    async def command(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
        extra = {name: getattr(args, name) for name in names}
        wait = getattr(args, "wait", None)
        if wait is not None:
            extra["wait"] = wait
        call_timeout = None if wait is None else wait + client.timeout
        answer = await client.call(op, timeout=call_timeout, **extra)
        print(answer.get("message", "done"), file=out)
        return EXIT_OK if answer.get("done", True) else EXIT_FAILED

    return command


async def _request(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    for part in await client.request([part.encode() for part in args.parts]):
        print(_show(part), file=out)
    return EXIT_OK


async def _watch(client: ControlClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = await client.call("events", after=0, wait=0)
    history = answer["events"]
    for entry in history[-args.last :] if args.last else []:
        print(format_line(entry), file=out, flush=True)
    after = answer["count"]
    print(f"watching {client.node_name} at {client.address} (Ctrl-C to stop)", file=out, flush=True)
    while True:
        answer = await client.call("events", after=after, wait=2.0, timeout=client.timeout + 2)
        for entry in answer["events"]:
            print(format_line(entry), file=out, flush=True)
        after = answer["count"]


COMMANDS: dict[str, tuple[Command, str]] = {
    "status": (_status, "show a node's role, generation, txid, replicas and channel counters"),
    "get": (_get, "print the value of KEY on the node (reads work on every node)"),
    "put": (_put, "set KEY to VALUE on the node (the master), as one transaction"),
    "delete": (_delete, "delete KEY on the node (the master)"),
    "force-master": (
        _simple("force-master"),
        "make a replica the master: it re-attaches with FORCE_MASTER and takes over",
    ),
    "promote": (
        _simple("promote"),
        "make a replica whose master is gone the master (a new generation)",
    ),
    "attach": (_simple("attach", "master"), "make the node a replica of MASTER"),
    "stop": (_simple("stop"), "stop a replica's replication gracefully (replica_stop)"),
    "cancel": (_simple("cancel"), "interrupt a replica's replication at once (cancel)"),
    "detach": (_simple("detach", "replica"), "on a master: detach REPLICA (all without one)"),
    "request": (_request, "send a message channel request with PARTs to the node's handler"),
    "watch": (_watch, "follow a node's events (attaches, syncs, role changes, stops)"),
    "shutdown": (_simple("shutdown"), "stop the node process"),
}


def add_parsers(commands: Any) -> None:
    """Register every operator command."""
    for name, (run, summary) in COMMANDS.items():
        parser = commands.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        parser.add_argument("address", metavar="ADDR", help="the node's address (host:port)")
        if name in ("get", "put", "delete"):
            parser.add_argument("key", metavar="KEY")
        if name == "put":
            parser.add_argument("value", metavar="VALUE")
            parser.add_argument(
                "--json", action="store_true", help="VALUE is JSON (a number, a list, a map...)"
            )
        if name == "status":
            parser.add_argument("--json", action="store_true", help="print the status as JSON")
        if name == "attach":
            parser.add_argument("master", metavar="MASTER", help="the master's address")
        if name == "detach":
            parser.add_argument("replica", metavar="REPLICA", nargs="?", help="the replica's name")
        if name == "request":
            parser.add_argument("parts", metavar="PART", nargs="+", help="the request's parts")
        if name == "watch":
            parser.add_argument(
                "--last", type=int, default=10, metavar="N",
                help="first print the N most recent events (default: 10)",
            )  # fmt: skip
        if name in ("force-master", "promote", "attach"):
            parser.add_argument(
                "--wait", type=float, default=10.0, metavar="S",
                help="seconds to wait for the change to complete (default: 10)",
            )  # fmt: skip
        parser.add_argument(
            "--timeout", type=float, default=5.0, metavar="S",
            help="seconds to wait for the node to answer (default: 5)",
        )  # fmt: skip
        parser.add_argument("--cluster", default="hakit", help="cluster name (default: hakit)")
        add_security_flags(parser, serving=False)
        parser.set_defaults(run=_runner(run))


def _runner(command: Command) -> Callable[[argparse.Namespace, TextIO], Awaitable[int]]:
    async def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
        security = security_from(args)
        try:
            async with ControlClient(
                args.address, security=security, timeout=args.timeout, cluster=args.cluster
            ) as client:
                return await command(client, args, out)
        except ControlError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
        except HAProtocolError as exc:
            raise CliError(str(exc), EXIT_REFUSED) from None
        except (HAIOError, NetworkTimeoutError) as exc:
            raise CliError(str(exc), EXIT_UNREACHABLE) from None
        except ValueError as exc:  # a malformed address
            raise CliError(str(exc), EXIT_FAILED) from None

    return run
