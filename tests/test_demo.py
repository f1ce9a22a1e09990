"""The demo reads as a story: each step's events under it, terms explained once, one ack style."""

from __future__ import annotations

import io
import re

import trio
import trio.testing

from hakit._demo import demo


async def run_demo() -> str:
    out = io.StringIO()
    with trio.fail_after(60):  # real TCP and the real clock, as `make demo` runs it
        await demo(out)
    return out.getvalue()


def steps(text: str) -> dict[int, str]:
    parts = re.split(r"^(\d+)\. ", text, flags=re.M)
    return {int(number): body for number, body in zip(parts[1::2], parts[2::2], strict=True)}


async def test_the_demo_prints_each_steps_events_under_it() -> None:
    story = steps(await run_demo())
    assert len(story) == 12
    assert "[alpha] replica beta synced (full)" in story[2]
    assert "[alpha] replica beta detached: STOPPED_BY_LOCAL_REQUEST" in story[3]
    assert "[alpha] replica gamma detached: STOPPED_BY_LOCAL_REQUEST" in story[5]
    assert "[gamma] master changed alpha -> beta" in story[6]
    assert "[beta] channel connection from gamma" in story[7]
    assert "[beta] refused intruder" in story[8]
    assert "[beta] replica gamma detached: CONNECTION_ABORTED" in story[9]
    assert "a cancel request came to the cancel point" in story[10]
    assert "[gamma] replica stopped: CONNECTION_ABORTED" in story[11]
    # both ends tell the same story: the master closed, it requested nothing
    assert (
        "[beta] replica gamma detached: CONNECTION_ABORTED (the master node is closing)"
        in (story[11])
    )
    assert "[" not in story[12]  # the summary: no stray events
    # the master sees a sync before it goes away, never after
    assert story[11].index("[beta] replica gamma synced") < story[11].index("detached")


async def test_the_demo_explains_each_term_once_and_acks_one_way() -> None:
    text = await run_demo()
    story = steps(text)
    for sentence, step in [
        ("A generation numbers a master's reign", 2),
        ("A full sync copies", 2),
        ("An equal sync sends nothing", 3),
        ("An incremental sync replays only", 5),
        ("KILL_MASTER is the message", 6),
    ]:
        assert text.count(sentence) == 1 and sentence in story[step], sentence
    why = "a node runs one attach at a time: so we cancel that attach first"
    assert why in " ".join(story[6].split())  # the force-master step says why it cancels
    acks = re.findall(r"acknowledged by (.*)", text)
    assert acks and all(re.fullmatch(r"[a-z]+( and [a-z]+)?|no replica", a) for a in acks), acks
    assert "('" not in text  # no tuples printed


async def test_demo_slow_paces_the_story(autojump_clock: trio.testing.MockClock) -> None:
    from hakit._demo import Narrator

    for slow, pause in [(False, 0.0), (True, 2.5)]:
        narrator = Narrator(io.StringIO(), slow=slow)
        start = trio.current_time()
        await narrator.step("a step")  # a pause before each step
        await narrator.say("a line")  # and after each line
        assert trio.current_time() - start == pause


def test_demo_slow_is_an_option_of_the_command() -> None:
    from hakit._cli import parser

    assert parser().parse_args(["demo", "--slow"]).slow is True
    assert parser().parse_args(["demo"]).slow is False
