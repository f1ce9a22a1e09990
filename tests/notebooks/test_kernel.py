"""Notebooks executed in a real ipykernel (nbclient): the DESIGN 6.2 example, and re-running
its first cell. (The workshop's notebooks, 01-quickstart first, are run by test_notebooks.py.)
Waits are the cells' own awaits; nothing sleeps here."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from . import design_example as ex  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute(nb):  # type: ignore[no-untyped-def]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return nb


def outputs_of(cell) -> list[dict]:  # type: ignore[no-untyped-def]
    return [dict(o) for o in cell.get("outputs", [])]


def result_text(cell) -> str | None:  # type: ignore[no-untyped-def]
    for out in outputs_of(cell):
        if out["output_type"] == "execute_result":
            return str(out["data"]["text/plain"])
    return None


def test_the_design_example_runs_in_a_real_kernel() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in ex.NOTEBOOK]
    execute(nb)
    cells = dict(zip(ex.NOTEBOOK, nb.cells, strict=True))
    # No cell printed anything but the check's own line: nothing from background tasks.
    for source, cell in cells.items():
        streams = [o for o in outputs_of(cell) if o["output_type"] == "stream"]
        if source is ex.CHECK:
            assert [s["text"] for s in streams] == ["facts hold\n"]
        else:
            assert streams == [], (source, streams)
        assert not [o for o in outputs_of(cell) if o["output_type"] == "error"]
    for source, expected in ex.RESULTS.items():
        assert result_text(cells[source]) == expected, source
    # The force master cell shows the reason and its plain explanation.
    name, _, explanation = (result_text(cells[ex.FORCE]) or "").partition(",")
    assert name == "('BECOMES_MASTER'"
    assert "now the master" in explanation
    # The cluster as a cell's value is the dashboard: widget, HTML and text.
    (shown,) = [o for o in outputs_of(cells[ex.SETUP]) if o["output_type"] == "execute_result"]
    data = shown["data"]
    assert WIDGET_VIEW in data
    assert "<table>" in data["text/html"] and "alpha" in data["text/html"]
    assert data["text/plain"].startswith("<LiveCluster 'hakit' seed=1 running")
    # nbclient saved the widget state: the dashboard's model is in it.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    model = data[WIDGET_VIEW]["model_id"]
    assert state[model]["model_name"] == "VBoxModel"
    assert any(s["model_name"] == "AnyModel" for s in state.values())


def test_rerunning_the_first_cell_replaces_the_cluster() -> None:
    nb = nbformat.v4.new_notebook()
    again = ex.SETUP + "\nold = cluster\n"
    nb.cells = [
        nbformat.v4.new_code_cell(again),
        nbformat.v4.new_code_cell(ex.ATTACH),
        nbformat.v4.new_code_cell(again.replace("old = cluster", "assert old.closed")),
        nbformat.v4.new_code_cell("len(cluster.nodes), cluster['beta'].role.value"),
        nbformat.v4.new_code_cell(ex.CLOSE),
    ]
    execute(nb)
    assert result_text(nb.cells[3]) == "(3, 'standalone')"
