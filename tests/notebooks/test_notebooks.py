"""Every teaching notebook runs top to bottom in a real ipykernel and shows the facts it claims.

The facts (a role, a stop reason, a value) are the values of the cells tagged
``check:<name>``, compared with `run.EXPECTED`; see `tests/notebooks/run.py`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from . import run

NOTEBOOKS = run.notebook_paths()


def test_the_workshop_has_its_notebooks() -> None:
    names = [path.stem for path in NOTEBOOKS]
    for expected in run.EXPECTED:
        assert expected in names, f"notebooks/{expected}.ipynb is missing"
    assert names[0] == "01-quickstart"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_and_ends_with_a_hidden_solution(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{path.name} is stored with outputs: clear them"
        assert cell.execution_count is None
    solutions = [cell for cell in code if "solution" in cell.metadata.get("tags", [])]
    assert solutions, f"{path.name} has no solution cell"
    for cell in solutions:
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True
    exercise = [c for c in nb.cells if c.cell_type == "markdown" and "## Exercise" in c.source]
    assert exercise, f"{path.name} has no exercise"
    assert nb.cells.index(exercise[-1]) < nb.cells.index(solutions[-1])
    assert nb.cells[0].cell_type == "markdown" and "**Why.**" in nb.cells[0].source


@pytest.fixture(scope="module")
def executed() -> dict[Path, tuple[Any, float]]:
    """Every notebook, executed once in its own kernel, four at a time."""
    return run.execute_all(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_its_facts(path: Path, executed) -> None:
    nb, _seconds = executed[path]
    assert run.problems(path.stem, nb) == []


def test_the_quickstart_shows_the_live_dashboard(executed) -> None:
    # `make lab` and the Binder badge open 01-quickstart: its `cluster` cells are the widget.
    nb, _seconds = executed[run.NOTEBOOKS / "01-quickstart.ipynb"]
    views = [
        output
        for cell in nb.cells
        if cell.cell_type == "code" and cell.source.rstrip().split("\n")[-1] == "cluster"
        for output in cell.outputs
        if output.get("output_type") == "execute_result"
        and "application/vnd.jupyter.widget-view+json" in output["data"]
    ]
    assert len(views) == 2, "01-quickstart shows the dashboard twice"
    assert "<table>" in views[0]["data"]["text/html"]  # and a static fallback


def test_the_process_notebook_shows_its_processes_in_the_dashboard(executed) -> None:
    nb, _seconds = executed[run.NOTEBOOKS / "07-separate-processes.ipynb"]
    (shown, *_) = [
        output
        for cell in nb.cells
        if cell.cell_type == "code" and cell.source.strip() == "cluster"
        for output in cell.outputs
        if output.get("output_type") == "execute_result"
    ]
    html = shown["data"]["text/html"]
    assert "alpha" in html  # the in-kernel master, and beside it the processes
    assert re.findall(r"(\w+) \(process \d+, running\)", html) == ["beta", "gamma"]


def test_a_wrong_fact_is_reported() -> None:
    # The checker itself: a value that differs, a missing cell and an unexpected tag are found.
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1", metadata={"tags": ["check:roles"]})
    cell.outputs = [
        nbformat.v4.new_output("execute_result", data={"text/plain": "{'alpha': 'REPLICA'}"})
    ]
    stray = nbformat.v4.new_code_cell("x", metadata={"tags": ["check:stray"]})
    nb.cells = [cell, stray]
    found = run.problems("01-quickstart", nb)
    assert any("check 'roles': expected" in problem for problem in found)
    assert any("check 'commit': the cell is missing" in problem for problem in found)
    assert any("check 'stray' has no expected value" in problem for problem in found)
