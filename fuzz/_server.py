"""The fuzzer's target processes: ``python -m fuzz._server master|replica ...``.

* ``master TOKEN``: a hakit master on 127.0.0.1 with default `NodeLimits`. Its message
  handler commits ``[b"put", TOKEN, key, value]`` requests (the writer's; fuzzed frames do
  not know the token, so they cannot overwrite its keys), answers ``[b"stats"]`` with a JSON
  report (role, generation, replicas, detaches, refused connections, RSS), and echoes
  anything else.
* ``replica MASTER_ADDRESS``: a hakit node on 127.0.0.1 attached to the master. Its handler
  answers ``[b"stats"]`` (txid, every time replication stopped) and ``[b"dump"]`` (its
  ``w/`` keys, msgpack).

Each prints one JSON line ``{"address": ...}`` on stdout once it serves, and dies with its
parent (PR_SET_PDEATHSIG). A crash ends the process with a traceback on stderr.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import tracemalloc
from typing import Any

import msgpack
import trio

import hakit

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def rss_kib() -> int:
    """This process's resident set size, in KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _announce(address: str | None) -> None:
    print(json.dumps({"address": address}), flush=True)


async def master(token: bytes) -> None:
    """Serve as the fuzzed master until killed."""
    # A shorter frame timeout than the default 30 s, so that short runs see it fire too.
    limits = hakit.NodeLimits(frame_timeout=10.0)
    async with hakit.open_node("m", address="127.0.0.1:0", limits=limits) as node:
        # Generous timers: the check is that fuzzed input never costs the healthy replica
        # its link, not that a busy shared machine always acks within 2 s.
        node.set_master_params(
            hakit.MasterParams(synch_timeout=30.0, detach_timeout=60.0, commit_timeout=30.0)
        )
        start_generation = node.generation

        async def handle(msg: hakit.ChannelMessage) -> None:
            if not msg.need_response:
                return
            parts = msg.parts
            if len(parts) == 4 and parts[0] == b"put" and parts[1] == token:
                async with node.transaction() as tx:
                    tx.put(parts[2], parts[3])
                assert tx.result is not None
                await msg.respond(str(tx.result.txid).encode())
            elif parts == [b"stats"]:
                await msg.respond(json.dumps(_master_stats(node, start_generation)).encode())
            elif parts == [b"top"] and tracemalloc.is_tracing():
                top = tracemalloc.take_snapshot().statistics("lineno")[:15]
                import gc

                from hakit.transports import FramedStream

                lines = [str(stat) for stat in top]
                lines.append(f"{len([o for o in gc.get_objects() if isinstance(o, FramedStream)])}"
                             " framed streams before gc.collect()")  # fmt: skip
                gc.collect()
                streams = [o for o in gc.get_objects() if isinstance(o, FramedStream)]
                lines += [f"{len(streams)} framed streams after"]
                for f in streams[:40]:
                    refs = [type(r).__name__ for r in gc.get_referrers(f)]
                    lines.append(f"  {f._decoder.buffered} {f.partial_since} {f.stream!r} {refs}")
                await msg.respond("\n".join(lines).encode())
            elif parts[:1] == [b"dump"] and parts[1:] == [token]:
                items = {k: v for k, v in node.items() if isinstance(k, bytes) and k[:2] == b"w/"}
                await msg.respond(msgpack.packb(items))
            else:
                await msg.respond(*parts[:16])

        node.set_msg_dispatch(handle)
        _announce(node.address)
        await trio.sleep_forever()


def _master_stats(node: hakit.Node, start_generation: int) -> dict[str, Any]:
    stats = node.statistics()
    return {
        "role": node.role.value,
        "generation": node.generation,
        "start_generation": start_generation,
        "txid": node.txid,
        "replicas": node.replicas,
        "detached": [
            [e.replica, e.reason.name, e.detail] for e in node.events.of_type(hakit.ReplicaDetached)
        ],
        "role_changes": len(node.events.of_type(hakit.RoleChanged)),
        "refused": stats.refused_connections,
        "channel_in": stats.channels.incoming_connections,
        "events": len(node.events),
        "rss_kib": rss_kib(),
    }


async def replica(master_address: str) -> None:
    """Replicate the master, recording every stop, until killed."""
    async with hakit.open_node("r", address="127.0.0.1:0") as node:
        stops: list[str] = []

        async def handle(msg: hakit.ChannelMessage) -> None:
            if msg.parts == [b"stats"]:
                body = {"txid": node.txid, "role": node.role.value, "stops": stops}
                await msg.respond(json.dumps(body).encode())
            elif msg.parts == [b"dump"]:
                items = {k: v for k, v in node.items() if isinstance(k, bytes) and k[:2] == b"w/"}
                await msg.respond(msgpack.packb(items))
            elif msg.need_response:
                await msg.respond(b"?")

        node.set_msg_dispatch(handle)
        params = hakit.ReplicaParams(wait_data_timeout=120.0)
        async with trio.open_nursery() as nursery:

            async def attach() -> None:
                while True:
                    try:
                        reason = await node.attach_master(master_address, params, timeout=30)
                        stops.append(f"stopped: {reason.name}")
                    except hakit.HakitError as exc:
                        stops.append(f"{type(exc).__name__}: {exc}")
                    await trio.sleep(0.5)

            nursery.start_soon(attach)
            with trio.fail_after(30):
                # attach_master has no "attached" callback to wait on: poll the role.
                while node.role is not hakit.Role.REPLICA:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            _announce(node.address)
            await trio.sleep_forever()


def main(argv: list[str]) -> None:
    """Run the role named by ``argv[0]``."""
    _die_with_parent()
    role, arg = argv[0], argv[1]
    if role == "master":
        if os.environ.get("FUZZ_TRACEMALLOC"):  # to find what grows: [b"top"] reports it
            tracemalloc.start()
        trio.run(master, bytes.fromhex(arg))
    elif role == "replica":
        trio.run(replica, arg)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
