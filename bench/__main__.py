"""``python -m bench [--quick] [--only NAME ...]``: measure hakit against same-run ceilings.

Prints one JSON object on stdout (progress goes to stderr) and appends a dated markdown table
to bench/RESULTS.md (full runs; ``--quick`` only with ``--record``). Missed goals are
reported, never an error: the exit status is 1 only when a scenario failed to run.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from . import _ceiling, _load, _report
from ._ceiling import MSG_WINDOW, Config
from ._util import Figure, log, now, ref_cpu, spin

FULL = Config(reps=3, duration=2.0, warmup=0.5, snapshot_keys=1_000_000, handover_reps=5)
QUICK = Config(reps=1, duration=0.4, warmup=0.2, snapshot_keys=100_000, handover_reps=2)

Step = Callable[[], Awaitable[dict[str, Figure]]]
BUSY = _load.BUSY
#: ``--only`` names that stand for several steps (a hakit figure with its ceiling).
GROUPS = {
    "channels": ("msg_rpc", "channel"),
    "scale": ("scale_log", "scale_idle", "scale_sync", "scale_async", "scale_1000"),
}
#: Steps that measure several figures (three security modes x three scenarios) get longer.
# Kernels take seconds to start: the notebook step gets six times the time too.
STEP_TIMEOUT_SCALE = {"security": 6, "notebook": 6}


def _steps(cfg: Config, quick: bool) -> list[tuple[str, Step]]:
    """Each ceiling runs right before the hakit figure it is compared with (the channel
    1-outstanding ceiling alternates with it: see `bench._channels.requests`).

    hakit is imported by the steps that need it, so that a hakit that fails to import still
    leaves the ceilings measured (and the failure reported).
    """

    async def oneway_1() -> dict[str, Figure]:
        return {"ceiling_oneway_1": await _ceiling.oneway(cfg, 1)}

    async def oneway_2() -> dict[str, Figure]:
        return {"ceiling_oneway_2": await _ceiling.oneway(cfg, 2)}

    async def async_2() -> dict[str, Figure]:
        from ._replication import async_commit

        return {"hakit_async_2": await async_commit(cfg, 2)}

    async def rpc() -> dict[str, Figure]:
        one, window = await _ceiling.rpc(cfg)
        return {"ceiling_rpc_1": one, "ceiling_rpc_16": window}

    async def sync() -> dict[str, Figure]:
        from ._replication import sync_commit

        figs = await sync_commit(cfg, (1, 16))
        return {"hakit_sync_1": figs[1], "hakit_sync_16": figs[16]}

    async def snapshot() -> dict[str, Figure]:
        data = _ceiling.snapshot_data(cfg.snapshot_keys)
        return {"ceiling_snapshot": await _ceiling.snapshot(cfg, data)}

    async def full_sync() -> dict[str, Figure]:
        from ._replication import initial_sync

        return {"hakit_initial_sync": await initial_sync(cfg)}

    async def handover() -> dict[str, Figure]:
        return {"ceiling_handover": await _ceiling.handover(cfg)}

    async def force() -> dict[str, Figure]:
        from ._replication import force_master

        return {"hakit_force_master": await force_master(cfg)}

    async def msg_rpc() -> dict[str, Figure]:
        shaped, window = await _ceiling.msg_rpc(cfg)
        return {"shaped_msg_rpc_1": shaped, f"ceiling_msg_rpc_{MSG_WINDOW}": window}

    async def channel() -> dict[str, Figure]:
        from ._channels import requests

        ceiling, one, window = await requests(cfg)
        return {
            "ceiling_msg_rpc_1": ceiling,
            "hakit_channel_1": one,
            f"hakit_channel_{MSG_WINDOW}": window,
        }

    # In-kernel scale: one step per figure, so that one that runs out of time loses no other.
    async def scale_log() -> dict[str, Figure]:
        from ._scale import event_log_cost

        return {"scale_log_us": event_log_cost()}

    async def scale_idle() -> dict[str, Figure]:
        from ._scale import idle_replica_memory

        return {"scale_idle_kib": await idle_replica_memory()}

    async def scale_sync() -> dict[str, Figure]:
        from ._scale import sync_ceiling, sync_commits

        duration = max(cfg.duration, 2.0)
        ceiling = await sync_ceiling(duration)
        one = await sync_commits(duration)
        # Context, no goal: sixteen writers at once share each frame and ack (group commit).
        sixteen = await sync_commits(duration, writers=16)
        return {"scale_sync_ceiling": ceiling, "scale_sync_100": one, "scale_sync_100_w16": sixteen}

    async def scale_async() -> dict[str, Figure]:
        from ._scale import async_ceiling, async_commits

        duration = max(cfg.duration, 2.0)
        ceiling = await async_ceiling(duration)
        return {"scale_async_ceiling": ceiling, "scale_async_100": await async_commits(duration)}

    async def scale_1000() -> dict[str, Figure]:
        from ._scale import thousand

        return {"scale_1000_detached": await thousand()}

    async def security() -> dict[str, Figure]:
        from ._security import security as measure

        return await measure(cfg)

    async def notebook() -> dict[str, Figure]:
        from ._notebook import measure

        # jupyter_client blocks: the kernels are driven from a worker thread.
        return await trio.to_thread.run_sync(measure, cfg)

    steps: list[tuple[str, Step]] = [
        ("oneway", oneway_2),
        ("async", async_2),
        ("rpc", rpc),
        ("sync", sync),
        ("snapshot", snapshot),
        ("initial_sync", full_sync),
        ("handover", handover),
        ("force", force),
        ("msg_rpc", msg_rpc),
        ("channel", channel),
        ("security", security),
        ("notebook", notebook),
    ]
    if not quick:
        steps.insert(0, ("oneway1", oneway_1))
        # In-kernel scale (many nodes in one run): minutes, so full runs only.
        steps += [("scale_log", scale_log), ("scale_idle", scale_idle), ("scale_sync", scale_sync),
                  ("scale_async", scale_async), ("scale_1000", scale_1000)]  # fmt: skip
    return steps


async def _run(
    cfg: Config, quick: bool, only: set[str], timeout: float, quiet_wait: float
) -> tuple[dict[str, Figure], dict[str, str], list[float]]:
    results: dict[str, Figure] = {}
    errors: dict[str, str] = {}
    ref: list[float] = []
    for name, step in _steps(cfg, quick):
        if only and name not in only:
            continue
        if quiet_wait:
            await _load.wait_quiet(quiet_wait)
            spin(0.3)
        ref.append(ref_cpu())
        log(f"{name}: ref_cpu {ref[-1] / 1e6:.1f} M loops/s")
        before = _load.sample()
        try:
            with trio.fail_after(timeout * STEP_TIMEOUT_SCALE.get(name, 1)):
                figures = await step()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} FAILED:\n{traceback.format_exc()}")
            continue
        load = _load.between(before, _load.sample())
        for fig in figures.values():
            fig.extra.update(load.to_json())
        if load.foreign >= BUSY:
            log(f"{name}: WARNING other processes used {load.foreign:.2f} CPUs meanwhile")
        results.update(figures)
    return results, errors, ref


def main(argv: Sequence[str] | None = None) -> int:
    steps = [name for name, _ in _steps(FULL, quick=False)]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition (<60 s)")
    parser.add_argument("--reps", type=int, help="timed repetitions per figure")
    parser.add_argument("--duration", type=float, help="seconds per timed repetition")
    parser.add_argument("--keys", type=int, help="keys in the initial-sync database")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="STEP",
        help=f"run only these steps: {' '.join(steps)}; or {', '.join(GROUPS)} "
        "(a group of steps: the channel ceilings and figures)",
    )
    parser.add_argument(
        "--record", action="store_true", help="append to RESULTS.md even if --quick"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--results", type=Path, default=_report.RESULTS, help="markdown file")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="S",
        help="before each step, wait up to S s for other processes to leave "
        "the CPUs alone (default 15; 0 with --quick)",
    )
    parser.add_argument(
        "--wait-budget",
        type=float,
        default=90.0,
        metavar="S",
        help="total seconds a full run may spend waiting for quiet (default 90)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in steps and name not in GROUPS]
    if unknown:
        parser.error(f"unknown step(s) {' '.join(unknown)}; known: {' '.join([*steps, *GROUPS])}")
    only = {step for name in args.only for step in GROUPS.get(name, (name,))}

    base = QUICK if args.quick else FULL
    cfg = Config(
        reps=args.reps or base.reps,
        duration=args.duration or base.duration,
        warmup=base.warmup,
        snapshot_keys=args.keys or base.snapshot_keys,
        handover_reps=args.reps if args.reps and not args.quick else base.handover_reps,
    )
    mode = "quick" if args.quick else "full"
    if args.only:
        mode += " (only " + ", ".join(args.only) + ")"
    info = _report.meta(mode, cfg.reps, cfg.duration)
    started = now()
    spin(0.3 if args.quick else 1.0)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 15.0)
    timeout = 20.0 if args.quick else 240.0
    # Waiting for a quiet machine is bounded over the whole run, so that `make bench` stays
    # within about 5 minutes on a machine that never goes quiet.
    _load.budget[0] = 0.0 if args.quick else max(quiet_wait, args.wait_budget)
    results, errors, ref = trio.run(_run, cfg, args.quick, only, timeout, quiet_wait)
    goal_list = _report.goals(results, cfg.snapshot_keys)
    data: dict[str, Any] = _report.summary(info, results, goal_list, errors, ref, now() - started)
    print(json.dumps(data, indent=2))
    record = (args.record or not args.quick) and not args.no_record
    if record:
        _report.append(_report.markdown(data, results, goal_list), args.results)
        log(f"appended to {args.results}")
    for goal in goal_list:
        g = goal.to_json()
        verdict = {None: "NOT RUN", True: "PASS", False: "MISS"}[g["pass"]]
        busy = " [busy machine]" if g["busy_machine"] else ""
        log(
            f"{verdict} {g['goal']}: {g['measured']} {g['unit']} (target {g['target']}; "
            f"x ceiling {g['ratio_to_ceiling']}){busy}"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
