"""Seeded fault schedules: what a torture run does, as plain data that prints as a script.

A schedule is a `Config` (the cluster and its parameters) and a list of steps. A step is a
tuple ``(op, *args, delay)``: do `op`, then let `delay` virtual seconds pass. Node arguments
are names, or ``"*"`` for whichever node is the master when the step runs (the one with the
highest generation). Steps whose preconditions do not hold when they run (stop a node that is
not attached, promote a replica) are skipped, so any sublist of a schedule is a schedule too:
that is what lets the shrinker delete steps freely.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass, field
from typing import Any

Step = tuple[Any, ...]

#: What each op takes (besides the trailing delay), for the generator and for validation.
OPS: dict[str, str] = {
    "write": "node keys",  # a transaction putting `keys` fresh keys, in a task of its own
    "mode": "node sync|async",  # the master's MasterParams switch between sync/async commit
    "attach": "node",  # attach to the current master, in the background
    "stop": "node",  # replica_stop()
    "cancel": "node",  # cancel()
    "detach": "node",  # the node's master detaches it (master side)
    "detach_all": "",  # the current master detaches every replica
    "force": "node",  # end the node's attach, then attach it with FORCE_MASTER
    "stop_master": "node",  # operator: stop_master() on a master
    "promote": "node",  # operator: set_master_params() on a former master, now standalone
    "partition": "a b",
    "heal": "",
    "hold": "a b",
    "release": "a b",
    "latency": "seconds jitter",  # on every link: delays drawn from seconds +- jitter
    "loss": "a b p",  # lose each transmission between a and b with probability p (TCP resends)
    "crash": "node",  # kill -9 the node (Cluster.crash): its tasks stop, its sockets die
    "restart": "node",  # a crashed node comes back standalone on its storage
}

DELAYS = (0.0, 0.0, 0.0, 0.001, 0.01, 0.05, 0.05, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Config:
    """The cluster a schedule runs on.

    Attributes:
        seed: seeds the simulated network and trio's scheduler, so a run is reproducible.
        nodes: how many nodes (named a, b, c, ...); ``a`` starts as the master and the others
            attach to it before the steps begin.
        ack_policy: the `hakit.AckPolicy` member name.
        quorum: `MasterParams.quorum`.
        synch_timeout: `MasterParams.synch_timeout`.
        keepalive_interval: `MasterParams.keepalive_interval`.
        stateful: whether masters keep a transaction log for incremental resync.
        disable_writes_on_kill: `MasterParams.disable_writes_on_kill`.
        wait_data_timeout: `ReplicaParams.wait_data_timeout`.
        sqlite: nodes keep their database in SQLite files (else in memory); always so in
            generated schedules that crash a node.
    """

    seed: int
    nodes: int = 3
    ack_policy: str = "ALL"
    quorum: int = 0
    synch_timeout: float = 0.5
    keepalive_interval: float = 0.1
    stateful: bool = True
    disable_writes_on_kill: bool = True
    wait_data_timeout: float = 0.5
    sqlite: bool = False
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple("abcdefgh"[: self.nodes]))

    def as_dict(self) -> dict[str, Any]:
        """The constructor arguments (for the repro script)."""
        values = asdict(self)
        values.pop("names")
        return {k: v for k, v in values.items() if v != _DEFAULTS.get(k, object())}


_DEFAULTS = {
    "nodes": 3,
    "ack_policy": "ALL",
    "quorum": 0,
    "synch_timeout": 0.5,
    "keepalive_interval": 0.1,
    "stateful": True,
    "disable_writes_on_kill": True,
    "wait_data_timeout": 0.5,
    "sqlite": False,
}

#: Relative weight of each op in generated schedules.
_WEIGHTS = {
    "write": 30,
    "mode": 3,
    "attach": 8,
    "stop": 3,
    "cancel": 3,
    "detach": 3,
    "detach_all": 1,
    "force": 5,
    "stop_master": 2,
    "promote": 3,
    "partition": 6,
    "heal": 4,
    "hold": 3,
    "release": 3,
    "latency": 3,
    "loss": 2,
    "crash": 2,
    "restart": 3,
}


def generate(seed: int, *, sqlite_every: int = 0, max_steps: int = 40) -> tuple[Config, list[Step]]:
    """Draw a schedule from `seed` (the same seed always gives the same schedule).

    Args:
        seed: the schedule's seed.
        sqlite_every: one schedule in this many runs on SQLite files (0: never).
        max_steps: the most steps a schedule has.
    """
    rng = random.Random(seed)
    nodes = rng.choice((3, 3, 3, 4))
    config = Config(
        seed=seed,
        nodes=nodes,
        ack_policy=rng.choice(("ALL", "ALL", "QUORUM", "ONE")),
        quorum=rng.choice((0, 0, 0, 1)),
        synch_timeout=rng.choice((0.2, 0.5, 1.0)),
        keepalive_interval=rng.choice((0.05, 0.1, 0.3)),
        stateful=rng.random() < 0.8,
        disable_writes_on_kill=rng.random() < 0.7,
        wait_data_timeout=rng.choice((0.0, 0.5, 0.5, 2.0)),
        sqlite=bool(sqlite_every) and seed % sqlite_every == 0,
    )
    names = config.names
    ops = list(_WEIGHTS)
    weights = [_WEIGHTS[op] for op in ops]
    steps: list[Step] = []
    for _ in range(rng.randint(3, max_steps)):
        op = rng.choices(ops, weights)[0]
        node = rng.choice(names)
        args: tuple[Any, ...]
        if op == "write":
            args = (rng.choice(("*", "*", "*", node)), rng.choice((1, 1, 3)))
        elif op == "mode":
            args = ("*", rng.choice(("sync", "sync", "async")))
        elif op in ("partition", "hold", "release"):
            a, b = rng.sample(names, 2)
            args = (a, b)
        elif op in ("heal", "detach_all"):
            args = ()
        elif op == "latency":
            args = rng.choice(((0.0, 0.0), (0.01, 0.0), (0.05, 0.05), (0.2, 0.1)))
        elif op == "loss":
            a, b = rng.sample(names, 2)
            args = (a, b, rng.choice((0.0, 0.05, 0.3)))
        else:
            args = (node,)
        steps.append((op, *args, rng.choice(DELAYS)))
    if any(step[0] == "crash" for step in steps) and not config.sqlite:
        # A crash is a killed process, not a lost disk: the node comes back on its file.
        config = dataclasses.replace(config, sqlite=True)
    return config, steps


def check_step(step: Step) -> None:
    """Raise ValueError if `step` is not a well-formed step."""
    if not step or step[0] not in OPS:
        raise ValueError(f"unknown step {step!r}")
    wanted = len(OPS[step[0]].split()) + 2  # the op, its arguments, the delay
    if len(step) != wanted:
        raise ValueError(f"step {step!r} needs {wanted - 2} arguments and a delay")
