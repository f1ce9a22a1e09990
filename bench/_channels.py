"""hakit message channels: request/response to a responder node in another process.

The requesting node runs in the benchmark process (it does not listen); the responder is a
hakit node in a child process (``python -m bench._child responder``, on 127.0.0.1) whose
message handler answers every request with the request's parts. Each request is
``await channel.send_request(b"x" * 100)`` on one `hakit.Channel`:

* 1 outstanding: one task, request after request;
* `MSG_WINDOW` (64) outstanding: that many tasks sharing the channel, each request after
  request.

Latency is per request, measured around the call. The ceilings these figures stand beside
are a bare trio framed-msgpack RPC over the same path (`bench._ceiling`); the 1-outstanding
one is measured here, in alternation with hakit's figure.
"""

from __future__ import annotations

import trio

import hakit

from . import _ceiling, _proc
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


async def requests(cfg: Config) -> tuple[Figure, Figure, Figure]:
    """Channel request/response with 1 and with `MSG_WINDOW` requests outstanding, and the
    1-outstanding ceiling.

    The 1-outstanding figure's goal is a fraction of its ceiling, so the two are measured in
    alternation (ceiling, hakit, ceiling, hakit...; the ceiling against a bare echo process,
    hakit against a responder node): both see the same machine, even if its speed drifts
    during the run (this VM's loopback round trip moves by 10-20% over tens of seconds).
    Each figure has an untimed warm-up, then `cfg.reps` timed repetitions.

    Returns (ceiling with 1 outstanding, hakit with 1, hakit with `MSG_WINDOW`).
    """
    ceiling = Figure("req/s", extra={"outstanding": 1})
    figs = {
        tasks: Figure("req/s", extra={"outstanding": tasks, "payload_bytes": len(MSG_PAYLOAD)})
        for tasks in (1, MSG_WINDOW)
    }
    one = figs[1]
    one.extra["paired_with_ceiling"] = True  # sample i beside the ceiling's sample i
    async with (
        _ceiling.msg_rpc_1_connection() as bare,
        _proc.child("responder") as responder,
        hakit.open_node("requester") as node,
        node.channel(responder.ready["address"]) as channel,
    ):
        _, n = await bare(cfg.warmup, 0, None)
        await _requests(channel, 1, cfg.warmup)
        for _ in range(cfg.reps):
            async for _ in repetitions(ceiling, 1):
                lat: list[float] = []
                rate, n = await bare(cfg.duration, n, lat)
                ceiling.add(rate, **latency_us(lat))
            async for _ in repetitions(one, 1):
                rate, lat = await _requests(channel, 1, cfg.duration)
                one.add(rate, **latency_us(lat))
        log(
            f"ceiling msg rpc 1 outstanding: {ceiling.median:,.0f} req/s "
            f"p50 {ceiling.side('p50_us'):.0f} us {ceiling.samples}"
        )
        window = figs[MSG_WINDOW]
        await _requests(channel, MSG_WINDOW, cfg.warmup)
        async for _ in repetitions(window, cfg.reps):
            rate, lat = await _requests(channel, MSG_WINDOW, cfg.duration)
            window.add(rate, **latency_us(lat))
        for tasks, fig in figs.items():
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
    window.extra["verified"] = verified
    return ceiling, one, window
