# ruff: noqa: E501  (the example's lines are kept exactly as DESIGN.md writes them)
"""The DESIGN 6.2 example, cell by cell, as the notebook tests run it.

`CELLS` holds the example's lines exactly as written there (split into cells), plus the two
definitions it presumes (a handler on gamma, ``my_trio_function``); `CHECKS` are the facts
checked after each cell, in the kernel.
"""

from __future__ import annotations

SETUP = """\
import hakit, hakit.jupyter as hj

cluster = hj.open_cluster(seed=1)            # re-running this cell closes the old cluster, starts anew
alpha = cluster.add_node("alpha")            # sync: the node runs in the background at mem:alpha
beta, gamma = cluster.add_node("beta"), cluster.add_node("gamma")
cluster.make_master("alpha")                 # set_master_params + serve replicas in the background
cluster                                      # last value of a cell: the live dashboard
"""

ATTACH = """\
b = cluster.attach("beta", "alpha")          # a Handle at once; the attach runs in the background
g = cluster.attach("gamma", "alpha")
await cluster.wait_synced("beta", "gamma")   # awaited in the cell; the kernel stays responsive
result = await cluster.write("greeting", "hello")   # a commit on the current master -> CommitResult
beta.get("greeting")                         # reads are plain sync calls
"""

FORCE = """\
reason = await cluster.force_master("gamma") # stops gamma's attach, re-attaches with FORCE_MASTER
reason.name, reason.describe()               # 'BECOMES_MASTER', its plain explanation
"""

DONE = """\
b.done                                       # False: beta followed gamma and is still attached
"""

HANDLER = """\
async def pong(msg):                         # (DESIGN 5: gamma has a handler)
    await msg.respond(b"pong:" + msg.parts[0])

gamma.set_msg_dispatch(pong)
"""

REQUEST = """\
answer = await cluster.request("beta", hakit.EID_MASTER, [b"ping"], timeout=2)  # gamma has a handler (5.)
cluster.partition({"gamma"}, {"alpha", "beta"}); cluster.heal()
answer
"""

TRIO = """\
import trio

async def my_trio_function(arg):             # (any trio code)
    await trio.sleep(0.1)
    return arg * 2

arg = 21
"""

RUN = """\
await hj.run(my_trio_function, arg)          # any trio code, to completion, from a cell
"""

START = """\
h = hj.start_soon(my_trio_function, arg)     # in the background: h.done, h.result(), await h
await h
"""

DIRECT = """\
async with gamma.transaction() as tx:        # hakit's own coroutines work in a cell too
    tx.put("direct", 1)
tx.result.txid
"""

CLOSE = """\
hj.close()                                   # ends the run cleanly (also at kernel shutdown)
"""

CELLS = [SETUP, ATTACH, FORCE, DONE, HANDLER, REQUEST, TRIO, RUN, START, DIRECT, CLOSE]

#: What each cell's result must be (its text/plain output), or None for no check.
RESULTS = {
    ATTACH: "'hello'",
    DONE: "False",
    REQUEST: "b'pong:ping'",
    RUN: "42",
    START: "42",
    DIRECT: "2",
}

CHECK = """\
assert result.txid == 1 and sorted(result.acked) == ["beta", "gamma"], result
assert reason is hakit.StopReason.BECOMES_MASTER
assert gamma.role is hakit.Role.MASTER and alpha.role is hakit.Role.STANDALONE
assert beta.statistics().master == "gamma" and not b.done
assert gamma.get("direct") == 1
print("facts hold")
"""

AFTER_CLOSE = """\
from hakit.jupyter import _guest
assert _guest.current_runtime() is None, "hj.close() ends the run"
assert cluster.closed and b.done
"""

#: The example's cells with the checks in place: before closing, and after.
NOTEBOOK = [*CELLS[:-1], CHECK, CLOSE, AFTER_CLOSE]
