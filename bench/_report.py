"""Goals, the JSON summary, and the markdown table appended to bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ._load import BUSY
from ._util import Figure, median_of

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

HEADER = """\
# hakit benchmark results

Appended by `make bench` (`.venv/bin/python -m bench`); newest run last. A `--quick` run
(smaller sizes, 1 repetition) is not recorded unless `--record` is given.

## Method

* **Topology.** The master (or the ceiling's sender) runs in the benchmark process; every
  replica (or the ceiling's receiver) is a separate process (`python -m bench._child`). For
  the message channels, the requesting node (or the ceiling's client) runs in the benchmark
  process and the responding node (or the ceiling's echo server) in a child process. All
  links are TCP on 127.0.0.1. Children are killed by PID when their scenario ends (and at
  exit; they also die with their parent).
* **Workload.** One transaction = `async with master.transaction() as tx:
  tx.put(f"k{i}", b"x" * 100)`; the ceilings move the same record
  `[txid, generation, [[0, key, value]]]` (about 120 bytes framed). One channel request =
  `await channel.send_request(b"x" * 100)`, answered with the same bytes; the channel
  ceilings send `[id, b"x" * 100]` and get the same value back.
* **Ceilings.** Each hakit figure stands beside a ceiling measured in the same run, right
  before it (or alternating with it, see below), with a bare trio framed-msgpack stream
  (4-byte length + msgpack, decoded by the receiving process, which stores each put in a
  dict or, for the channel ceilings, encodes the request again as its answer; no hakit
  code):
  * async commit <-> one-way frames, 64 per `send_all`, to as many receiver processes as
    there are replicas, timed until every receiver confirmed the last frame;
  * sync commit, 1 writer <-> request/response with 1 outstanding;
  * sync commit, 16 writers <-> request/response with a window of 16 requests in flight from
    one task (refills leave in one `send_all`; answers to one read leave in one `send_all`);
  * initial sync <-> the same keys as flat msgpack chunks (2000 pairs per frame, 8 frames per
    `send_all`), receiver rebuilding a dict, timed from the receiver process starting to
    connect until the sender has its acknowledgement;
  * force master <-> a fresh TCP connect plus three request/response round trips, timed in
    the connecting process;
  * channel request/response, 1 outstanding <-> `[id, payload]` request/response with 1
    outstanding (the same loop as the sync-commit ceiling), latency per request. Its goal is
    a fraction of the ceiling, so these two are not measured one after the other but in
    alternation, a ceiling repetition then a hakit one, `reps` times: both see the same
    machine, even when its loopback speed drifts during the run;
  * channel request/response, 64 outstanding <-> the same with a window of 64 requests in
    flight from one task (refills leave in one `send_all`; answers to one read leave in one
    `send_all`).
  Context, no goal: `shaped_msg_rpc_1` is the 1-outstanding channel ceiling in the task
  shape hakit's channels have by design: on the server, the task that read a request hands
  the next read to another task before it answers (so a slow handler holds up nothing); on
  the client, the caller reads its own answer, then wakes a watcher task that reads the
  connection while no caller does. Ceiling -> shaped is the cost of that shape; shaped ->
  hakit is hakit's own.
  "x ceiling" is hakit's speed as a fraction of the ceiling's (for times: ceiling / hakit).
  A goal stated relative to the ceiling (channel, 1 outstanding: >= 0.8 x ceiling rate) is
  judged by its "x ceiling": for a figure measured in alternation with its ceiling, the
  median of the per-pair ratios (each hakit repetition over the ceiling repetition right
  before it), so one pair caught by a change of machine speed does not decide the verdict;
  its "x goal" is that ratio / 0.8.
* **Definitions.**
  * *async commit*: `MasterParams(mode=ASYNC | HOTSYNC | STATEFUL)`, 2 replica processes,
    one writer task committing for the whole measurement; rate = transactions / time from
    the first commit until `statistics().replicas[i].acked_txid` reached the last txid on
    every replica (polled every 0.5 ms). `commit_return_rate` is the rate at which the
    commits themselves returned.
  * *sync commit*: default `MasterParams` (ack policy ALL), 1 replica process; 1 writer task,
    then 16 concurrent writer tasks; latency = one `async with` block, per commit.
  * *initial sync*: the master holds N keys `k<i>` -> 100 bytes (built in batches of 10,000
    puts, not timed); an empty replica process, already started with its node open, calls
    `attach_master`. Timed from that call until the master's `attach_replica` returns (the
    master received the replica's acknowledgement of the snapshot txid, sent after the
    replica committed the loaded database). Clocks: `time.perf_counter` (CLOCK_MONOTONIC,
    system-wide). Also reported: until the replica's `DB_LOAD_OK` notification, and the
    master's own `Connected` -> `ReplicaSynced` event times.
  * *force master*: a replica process that was attached and acknowledged 10 sync commits
    stops (`replica_stop`), then calls `attach_master(..., ReplicaParams(mode=FORCE_MASTER))`
    on its equal database; timed inside the replica process from that call until its first
    write transaction as master has committed. Master and replica spin to a common start
    instant so neither starts on a cold vCPU.
  * *channel request/response*: a requesting node (not listening) and a responder node in a
    child process whose `set_msg_dispatch` handler does `await msg.respond(*msg.parts)`;
    one `hakit.Channel`; one task calling `send_request` in a loop (1 outstanding), then 64
    tasks sharing the channel (64 outstanding). Rate = answers / time until the last task's
    last answer; latency = one `send_request` call, p50/p99 over every request of a
    repetition. `verified`: the channel statistics count an answer for every request and no
    failed or timed-out one. `--only channels` runs the channel ceilings and figures alone.
  * *notebook* (`bench/_notebook.py`): a real ipykernel (this venv's), driven over
    jupyter_client; in it the DESIGN 6.2 live cluster (`hakit.jupyter`: alpha the master,
    beta and gamma replicas, sync commits, ack policy ALL, all in the kernel's trio guest
    run). Commit rate = one writer (`await hj.run(writer, seconds)`, `async with
    alpha.transaction()` in a loop) for `duration` seconds, in a fresh kernel per
    repetition: without the dashboard, then with it shown (the cluster as a cell's value,
    refreshing while the writer commits; the widget messages it publishes on iopub are
    counted and must be there, and none without it), then with its live timeline tab on
    show (side value `timeline_tab`), then without again once it is closed. The rate
    without is the mean of the runs before and after (a warming kernel or a change of
    load favours neither side); the goal is the median of the per-pair ratios, >= 0.9.
    Cell time = execute request to execute reply as the client sees it (its outputs are
    read after, untimed), for 200 trivial cells (`1`), p99, while a background writer
    (`hj.start_soon`) commits at full speed with the dashboard shown; beside it the same
    on an idle kernel.
* **Repetitions and noise.** The benchmark spins ~1 s first; each scenario runs one
  untimed warm-up of its own workload, then n timed repetitions of a few seconds
  (handover: n single handovers, initial sync: n fresh replica processes). Figures are
  medians with min-max. `ref_cpu` (a fixed pure-Python dict loop, in loop iterations/s;
  not the perf-anchors' unit, compare it between runs only) is sampled before every
  scenario; a low value flags a slow moment.
* **Shared machine.** Other processes (a test run...) on the two vCPUs wreck these figures.
  Before each step the benchmark waits (up to 15 s, `--quiet-wait`) until other processes
  use less than 0.15 CPUs, and it records what they used during each figure
  (`foreign_cpus`, from /proc/stat minus the benchmark's own processes; `steal_cpus` is the
  hypervisor's). A goal row measured while they used >= 0.15 CPUs is flagged "busy machine".
  This 2-vCPU VM is noisy: spreads of 10-60 % within a run and up to 2x between runs are
  normal (see /work/shared/reference/perf-anchors.md).
"""


@dataclass
class Goal:
    key: str
    title: str
    target: float
    higher_is_better: bool
    unit: str
    measured: float
    figure: Figure | None
    ceiling: float | None
    ceiling_what: str
    ceiling_figure: Figure | None = None
    #: The target is a fraction of the ceiling ("measured >= target x ceiling").
    relative: bool = False
    #: Also report the figure's and the ceiling's p50/p99 latency.
    latency: bool = False

    @property
    def ran(self) -> bool:
        return self.figure is not None

    @property
    def threshold(self) -> float | None:
        """The target in the goal's unit (None: a relative goal whose ceiling is missing)."""
        if not self.relative:
            return self.target
        if self.ceiling is None or self.ceiling != self.ceiling:
            return None
        return self.target * self.ceiling

    @property
    def passed(self) -> bool | None:
        """None when the figure was not measured (``--only``, or its step failed), or when
        the ceiling of a relative goal was not."""
        threshold = self.threshold
        if not self.ran or threshold is None:
            return None
        if self.measured != self.measured:
            return False
        if self.relative:
            ratio = self.ratio_to_ceiling
            return ratio is not None and ratio >= self.target
        return self.measured >= threshold if self.higher_is_better else self.measured <= threshold

    @property
    def paired_ratios(self) -> list[float] | None:
        """Per-repetition ratios when the figure and its ceiling were measured in alternation
        (the figure's ``paired_with_ceiling``): repetition i of each stands beside the other."""
        f, c = self.figure, self.ceiling_figure
        if f is None or c is None or not f.extra.get("paired_with_ceiling"):
            return None
        if not f.samples or len(f.samples) != len(c.samples):
            return None
        if self.higher_is_better:
            return [a / b for a, b in zip(f.samples, c.samples, strict=True)]
        return [b / a for a, b in zip(f.samples, c.samples, strict=True)]

    @property
    def target_text(self) -> str:
        cmp = ">=" if self.higher_is_better else "<="
        if self.relative:
            what = "rate" if self.higher_is_better else "time"
            return f"{cmp} {_num(self.target)} x ceiling {what}"
        return f"{cmp} {_num(self.target)} {self.unit}"

    @property
    def ratio_to_ceiling(self) -> float | None:
        """hakit's speed as a fraction of the ceiling's: the median of the per-repetition
        ratios for a figure measured in alternation with its ceiling, else median / median."""
        if self.ceiling is None or not self.measured or self.measured != self.measured:
            return None
        paired = self.paired_ratios
        if paired is not None:
            return median_of(paired)
        return (
            self.measured / self.ceiling if self.higher_is_better else self.ceiling / self.measured
        )

    @property
    def ratio_to_goal(self) -> float | None:
        threshold = self.threshold
        if threshold is None or not self.measured or self.measured != self.measured:
            return None
        if self.relative:
            ratio = self.ratio_to_ceiling
            return None if ratio is None else ratio / self.target
        return self.measured / threshold if self.higher_is_better else threshold / self.measured

    @property
    def foreign_cpus(self) -> float:
        """Other processes' CPU use while this figure or its ceiling was measured: the
        larger median over their repetitions (or over the whole step, if not recorded)."""
        values = [0.0]
        for fig in (self.figure, self.ceiling_figure):
            if fig is None:
                continue
            value = fig.side("foreign_cpus")
            if value != value:
                value = fig.extra.get("step_foreign_cpus", 0.0)
            values.append(value)
        return max(values)

    @property
    def busy(self) -> bool:
        return self.foreign_cpus >= BUSY

    def percentiles(self) -> dict[str, float | None]:
        """p50/p99 (us) of the figure and of its ceiling, for goals with `latency`."""
        out: dict[str, float | None] = {}
        if not self.latency:
            return out
        for prefix, fig in (("", self.figure), ("ceiling_", self.ceiling_figure)):
            for key in ("p50_us", "p99_us"):
                if prefix and fig is not None and key not in fig.side_keys():
                    continue  # a ceiling that measures no latency (a window of requests)
                out[prefix + key] = None if fig is None else _num(fig.side(key))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "goal": self.title,
            "target": self.target_text,
            "measured": _num(self.measured),
            "unit": self.unit,
            **self.percentiles(),
            "ceiling": _num(self.ceiling) if self.ceiling is not None else None,
            "ceiling_what": self.ceiling_what,
            "ratio_to_ceiling": _r(self.ratio_to_ceiling),
            **(
                {}
                if (paired := self.paired_ratios) is None
                else {"paired_ratios": [_r(r) for r in paired]}
            ),
            "ratio_to_goal": _r(self.ratio_to_goal),
            "pass": self.passed,
            "busy_machine": self.busy,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _num(value: float | None) -> float | None:
    if value is None or value != value:
        return None
    return round(value, 1) if abs(value) >= 100 else float(f"{value:.4g}")


def goals(results: dict[str, Any], snapshot_keys: int) -> list[Goal]:
    out: list[Goal] = []

    def fig(key: str) -> Figure | None:
        value = results.get(key)
        return value if isinstance(value, Figure) else None

    def add(
        key: str,
        title: str,
        target: float,
        higher: bool,
        unit: str,
        measured_key: str,
        ceiling_key: str,
        what: str,
        extra: str | None = None,
        *,
        relative: bool = False,
        latency: bool = False,
    ) -> None:
        f = fig(measured_key)
        c = fig(ceiling_key)
        measured = float("nan") if f is None else (f.side(extra) if extra else f.median)
        ceiling = None if c is None else (c.side(extra) if extra else c.median)
        out.append(
            Goal(key, title, target, higher, unit, measured, f, ceiling, what, c, relative, latency)
        )

    add(
        "async2",
        "async commit, 2 replica processes, applied on both",
        100_000,
        True,
        "txn/s",
        "hakit_async_2",
        "ceiling_oneway_2",
        "one-way batched frames/s to 2 receiver processes",
    )
    add(
        "sync1",
        "sync commit, 1 replica, 1 writer",
        5_000,
        True,
        "txn/s",
        "hakit_sync_1",
        "ceiling_rpc_1",
        "rpc req/s, 1 outstanding",
    )
    add(
        "sync1_p50",
        "sync commit, 1 replica, 1 writer: p50 latency",
        200,
        False,
        "us",
        "hakit_sync_1",
        "ceiling_rpc_1",
        "rpc p50 latency, 1 outstanding",
        "p50_us",
    )
    add(
        "sync16",
        "sync commit, 1 replica, 16 writers (group commit)",
        30_000,
        True,
        "txn/s",
        "hakit_sync_16",
        "ceiling_rpc_16",
        "rpc req/s, window of 16 in flight",
    )
    scale = snapshot_keys / 1_000_000
    label = f"{snapshot_keys:,}" + ("" if scale == 1 else " (goal scaled from 1.5 s per 1e6)")
    add(
        "initial_sync",
        f"full initial sync of {label} keys x 100 B",
        1.5 * scale,
        False,
        "s",
        "hakit_initial_sync",
        "ceiling_snapshot",
        "bare snapshot transfer + dict rebuild",
    )
    add(
        "force_master",
        "force-master handover to first accepted write",
        5.0,
        False,
        "ms",
        "hakit_force_master",
        "ceiling_handover",
        "connect + 3 request/response round trips",
    )
    add(
        "channel1",
        "channel request/response, 1 outstanding",
        0.8,
        True,
        "req/s",
        "hakit_channel_1",
        "ceiling_msg_rpc_1",
        "bare rpc req/s, [id, 100 B] echoed, 1 outstanding",
        relative=True,
        latency=True,
    )
    add(
        "channel64",
        "channel request/response, 64 outstanding",
        30_000,
        True,
        "req/s",
        "hakit_channel_64",
        "ceiling_msg_rpc_64",
        "bare rpc req/s, [id, 100 B] echoed, window of 64 in flight",
        latency=True,
    )
    # In-kernel scale (full runs only): absolute goals; listed when measured. The commit
    # figures stand beside the same work in bare trio (one reader task for every replica,
    # as in hakit; no hakit).
    if any(key.startswith("scale_") for key in results):
        add(
            "scale_sync",
            "in-kernel sync commit, 100 nodes (99 replicas, ack ALL), log on",
            300,
            True,
            "txn/s",
            "scale_sync_100",
            "scale_sync_ceiling",
            "bare trio: one reader for every replica, the same frames and event records, no hakit",
        )
        add(
            "scale_async",
            "in-kernel async commit, 100 nodes, applied on all 99, log on",
            3_000,
            True,
            "txn/s",
            "scale_async_100",
            "scale_async_ceiling",
            "bare trio: batches of 512, one reader for every replica, event records, no hakit",
        )
        add(
            "scale_1000",
            "1,000 nodes attach and commit at default settings: replicas detached",
            0,
            False,
            "replicas",
            "scale_1000_detached",
            "",
            "",
        )
        add(
            "scale_idle",
            "idle attached replica (in-kernel), memory",
            100,
            False,
            "KiB",
            "scale_idle_kib",
            "",
            "",
        )
        add(
            "scale_log",
            "event log cost per message (sent + delivered records)",
            10,
            False,
            "us",
            "scale_log_us",
            "",
            "",
        )
    # Link security, each against the plain figure measured in alternation with it.
    add(
        "tls_sync1",
        "TLS: sync commit, 1 writer (TLS costs <= 30%)",
        0.7,
        True,
        "txn/s",
        "tls_sync_1",
        "plain_sync_1",
        "the same without TLS, measured in alternation",
        relative=True,
    )
    for key, title, measured, plain in (
        ("auth_sync1", "sync commit, 1 writer", "auth_sync_1", "plain_sync_1"),
        ("auth_sync16", "sync commit, 16 writers", "auth_sync_16", "plain_sync_16"),
        ("auth_channel1", "channel request/response, 1 outstanding", "auth_channel_1",
         "plain_channel_1"),
    ):  # fmt: skip
        add(
            key,
            f"cluster secret: {title} (nothing measurable after the handshake)",
            0.95,
            True,
            fig(measured).unit if fig(measured) else "",
            measured,
            plain,
            "the same without a secret, measured in alternation",
            relative=True,
        )
    add(
        "notebook_dashboard",
        "notebook: sync commits with the dashboard shown and updating",
        0.9,
        True,
        "txn/s",
        "nb_commit_dashboard",
        "nb_commit_plain",
        "the same commits in the same kernel setup, no dashboard",
        relative=True,
    )
    add(
        "notebook_cell_p99",
        "notebook: trivial cell while committing at full speed, p99",
        50,
        False,
        "ms",
        "nb_cell_busy",
        "nb_cell_idle",
        "trivial cell p99 on an idle kernel",
    )
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _git() -> str:
    root = RESULTS.parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "hakit"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return commit + (" + uncommitted hakit changes" if dirty else "")


def meta(mode: str, reps: int, duration: float) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "reps": reps,
        "duration_s": duration,
        "hakit": f"{_version('hakit')} @ {_git()}",
        "python": platform.python_version(),
        "trio": _version("trio"),
        "msgpack": _version("msgpack"),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }


def summary(
    info: dict[str, Any],
    results: dict[str, Any],
    goal_list: list[Goal],
    errors: dict[str, str],
    ref: list[float],
    wall: float,
) -> dict[str, Any]:
    info = dict(info)
    info["ref_cpu_loops_s"] = (
        {
            "median": round(median_of(ref)),
            "min": round(min(ref)),
            "max": round(max(ref)),
        }
        if ref
        else None
    )
    info["wall_s"] = round(wall, 1)
    return {
        "meta": info,
        "goals": [g.to_json() for g in goal_list],
        "figures": {k: v.to_json() for k, v in results.items() if isinstance(v, Figure)},
        "errors": errors,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return "not run" if passed is None else "PASS" if passed else "**MISS**"


def _spread(fig: Figure | None, key: str | None = None) -> str:
    if fig is None or not fig.samples:
        return "n/a"
    if key is not None:
        return f"{_fmt(fig.extra.get(key))}"
    return f"{_fmt(min(fig.samples))}-{_fmt(max(fig.samples))} (n={len(fig.samples)})"


_TITLES = {
    "hakit_async_2": "hakit async commit, 2 replicas (applied on both)",
    "hakit_sync_1": "hakit sync commit, 1 replica, 1 writer",
    "hakit_sync_16": "hakit sync commit, 1 replica, 16 writers",
    "hakit_initial_sync": "hakit full initial sync",
    "hakit_force_master": "hakit force master to first write",
    "ceiling_oneway_1": "one-way batched frames, 1 receiver process",
    "ceiling_oneway_2": "one-way batched frames, 2 receiver processes",
    "ceiling_rpc_1": "request/response, 1 outstanding",
    "ceiling_rpc_16": "request/response, window of 16",
    "ceiling_snapshot": "snapshot transfer + dict rebuild",
    "ceiling_handover": "connect + 3 round trips",
    "shaped_msg_rpc_1": "message request/response in hakit's channel task shape, 1 outstanding",
    "ceiling_msg_rpc_1": "message request/response, 1 outstanding",
    "ceiling_msg_rpc_64": "message request/response, window of 64",
    "hakit_channel_1": "hakit channel send_request, 1 outstanding",
    "hakit_channel_64": "hakit channel send_request, 64 outstanding",
}


def markdown(data: dict[str, Any], results: dict[str, Any], goal_list: list[Goal]) -> str:
    info = data["meta"]
    ref = info.get("ref_cpu_loops_s") or {}
    lines = [
        f"## {info['date']}: {info['mode']} run ({info['reps']} reps x {info['duration_s']} s)",
        "",
        f"hakit {info['hakit']}; Python {info['python']}, trio {info['trio']}, msgpack "
        f"{info['msgpack']}; {info['cpus']} CPUs; ref_cpu {_fmt(ref.get('median'))} loops/s "
        f"({_fmt(ref.get('min'))}-{_fmt(ref.get('max'))}); wall {info['wall_s']} s.",
        "",
        "| goal | target | hakit (median) | min-max (n) | ceiling, same run "
        "| x ceiling | x goal | pass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in goal_list:
        extra = "p50_us" if g.key == "sync1_p50" else None
        spread = (
            _spread(g.figure)
            if extra is None
            else (f"p99 {_fmt(g.figure.side('p99_us'))}" if g.figure else "n/a")
        )
        unit = g.ceiling_figure.unit if g.ceiling_figure and g.key != "sync1_p50" else g.unit
        ceiling = f"{_fmt(g.ceiling, unit)}"
        pct = g.percentiles()
        if pct:
            spread += f"; p50 {_fmt(pct['p50_us'])} us, p99 {_fmt(pct['p99_us'])} us"
            if "ceiling_p50_us" in pct:
                ceiling += f", p50 {_fmt(pct['ceiling_p50_us'])} us"
        ceiling += f" ({g.ceiling_what})"
        cmp = ">=" if g.higher_is_better else "<="
        target = f"{cmp} {_fmt(g.target, g.unit)}"
        if g.relative:
            target = f"{g.target_text} ({_fmt(g.threshold, g.unit)})"
        busy = f" (busy machine: {g.foreign_cpus:.2f} foreign CPUs)" if g.busy else ""
        ratio = _fmt(g.ratio_to_ceiling)
        paired = g.paired_ratios
        if paired is not None:
            ratio += f" (median of pairs {', '.join(f'{r:.3f}' for r in paired)})"
        lines.append(
            f"| {g.title} | {target} | {_fmt(g.measured, g.unit)} | {spread} "
            f"| {ceiling} | {ratio} | {_fmt(g.ratio_to_goal)} "
            f"| {_verdict(g.passed)}{busy} |"
        )
    lines += ["", "| figure | median | min-max (n) | notes |", "|---|---|---|---|"]
    for key, fig in results.items():
        if not isinstance(fig, Figure):
            continue
        title = _TITLES.get(key, key)
        skip = {"median", "min", "max", "n", "unit", "samples"}
        notes = ", ".join(
            f"{k}={_fmt(v) if isinstance(v, float) else v}"
            for k, v in fig.to_json().items()
            if k not in skip
        )
        lines.append(f"| {title} | {_fmt(fig.median, fig.unit)} | {_spread(fig)} | {notes} |")
    if data["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in data["errors"].items())]
    return "\n".join(lines) + "\n"


def append(text: str, path: Path = RESULTS) -> None:
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as out:
        out.write("\n" + text)
