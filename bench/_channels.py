"""hakit message channels: request/response to a responder node in another process.

The requesting node runs in the benchmark process (it does not listen); the responder is a
hakit node in a child process (``python -m bench._child responder``, on 127.0.0.1) whose
message handler answers every request with the request's parts. Each request is
``await channel.send_request(b"x" * 100)`` on one `hakit.Channel`:

* 1 outstanding: one task, request after request;
* `MSG_WINDOW` (64) outstanding: that many tasks sharing the channel, each request after
  request.

Latency is per request, measured around the call. The ceilings these figures stand beside
(a bare trio framed-msgpack RPC over the same path) are `bench._ceiling.msg_rpc`.
"""

from __future__ import annotations

import trio

import hakit

from . import _proc
from ._ceiling import MSG_PAYLOAD, MSG_WINDOW, Config
from ._load import repetitions
from ._util import Figure, latency_us, log, now


async def _requests(
    channel: hakit.Channel, tasks: int, duration: float
) -> tuple[float, list[float]]:
    """`tasks` tasks send requests until the deadline; return (answers/s, latencies)."""
    lat: list[float] = []
    count = 0
    t0 = now()
    deadline = t0 + duration

    async def worker() -> None:
        nonlocal count
        send = channel.send_request
        payload = MSG_PAYLOAD
        while True:
            t = now()
            answer = await send(payload)
            t1 = now()
            if answer != payload:
                raise RuntimeError(f"the responder answered {answer!r:.60}")
            lat.append(t1 - t)
            count += 1
            if t1 >= deadline:
                return

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return count / (now() - t0), lat


async def requests(cfg: Config) -> tuple[Figure, Figure]:
    """Channel request/response with 1 and with `MSG_WINDOW` requests outstanding; each
    figure has an untimed warm-up, then `cfg.reps` timed repetitions."""
    figs = {
        tasks: Figure("req/s", extra={"outstanding": tasks, "payload_bytes": len(MSG_PAYLOAD)})
        for tasks in (1, MSG_WINDOW)
    }
    async with (
        _proc.child("responder") as responder,
        hakit.open_node("requester") as node,
        node.channel(responder.ready["address"]) as channel,
    ):
        for tasks, fig in figs.items():
            await _requests(channel, tasks, cfg.warmup)
            async for _ in repetitions(fig, cfg.reps):
                rate, lat = await _requests(channel, tasks, cfg.duration)
                fig.add(rate, **latency_us(lat))
            log(
                f"hakit channel {tasks} outstanding: {fig.median:,.0f} req/s "
                f"p50 {fig.side('p50_us'):.0f} us p99 {fig.side('p99_us'):.0f} us {fig.samples}"
            )
        stats = node.statistics().channels
    verified = (
        stats.requests_failed == 0
        and stats.requests_timed_out == 0
        and stats.answers_received == stats.requests_sent
    )
    if not verified:
        log(f"hakit channel verification failed: {stats}")
    figs[MSG_WINDOW].extra["verified"] = verified
    return figs[1], figs[MSG_WINDOW]
