"""How `bench._report` judges a goal stated as a fraction of its ceiling."""

from __future__ import annotations

from bench._report import Goal
from bench._util import Figure


def _goal(hakit: list[float], ceiling: list[float], *, paired: bool) -> Goal:
    f = Figure("req/s", extra={"paired_with_ceiling": True} if paired else {})
    c = Figure("req/s")
    for value in hakit:
        f.add(value)
    for value in ceiling:
        c.add(value)
    return Goal("g", "goal", 0.8, True, "req/s", f.median, f, c.median, "ceiling", c, True)


def test_alternating_figures_are_judged_by_the_median_of_their_pair_ratios() -> None:
    # The machine slowed down between the ceiling and hakit in the second pair only.
    goal = _goal([9_000, 7_000, 9_100], [10_000, 10_000, 11_000], paired=True)
    assert goal.paired_ratios == [0.9, 0.7, 9_100 / 11_000]
    assert goal.ratio_to_ceiling == 9_100 / 11_000
    assert goal.passed is True
    assert goal.to_json()["paired_ratios"] == [0.9, 0.7, 0.827]
    assert goal.ratio_to_goal == (9_100 / 11_000) / 0.8


def test_a_pair_ratio_below_the_target_fails() -> None:
    goal = _goal([7_000, 7_900, 9_000], [10_000, 10_000, 10_000], paired=True)
    assert goal.ratio_to_ceiling == 0.79
    assert goal.passed is False


def test_figures_measured_apart_are_judged_median_over_median() -> None:
    goal = _goal([9_000, 7_000, 9_100], [10_000, 10_000, 11_000], paired=False)
    assert goal.paired_ratios is None
    assert goal.ratio_to_ceiling == 9_000 / 10_000
    assert goal.passed is True
    assert "paired_ratios" not in goal.to_json()


def test_unequal_repetition_counts_are_not_paired() -> None:
    goal = _goal([9_000, 9_000], [10_000, 10_000, 10_000], paired=True)
    assert goal.paired_ratios is None
    assert goal.ratio_to_ceiling == 0.9
