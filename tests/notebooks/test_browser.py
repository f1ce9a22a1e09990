"""The dashboard in a real browser: JupyterLab on 127.0.0.1, driven by Playwright with
Debian's chromium (installed by ``make test`` when missing; never ``playwright install``).

It opens a notebook with the dashboard, runs it, clicks Force master, and sees the role
change and the stop-reason row in the page, in the light and the dark theme. Every wait is
on a page or server condition, never a fixed delay. Screenshots go under
``build/screenshots/`` (the test prints the path).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

nbformat = pytest.importorskip("nbformat")
playwright_sync = pytest.importorskip("playwright.sync_api")

from ..jupyterlab import CHROMIUM, SHOTS, Lab, running_lab, write_notebook  # noqa: E402
from . import design_example as ex  # noqa: E402

#: Milliseconds allowed for each page condition.
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "dashboard.ipynb", [ex.SETUP, ex.ATTACH])
    with running_lab(root) as server:
        yield server


def run_all(page, cells: int) -> None:  # type: ignore[no-untyped-def]
    """Run the notebook's cells from the top, as a person does: Shift+Enter on each."""
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Escape")
    for _ in range(cells):
        page.keyboard.press("Shift+Enter")


def test_force_master_by_click_in_jupyterlab(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nbrowser test screenshots: {SHOTS}")
    lab.end_sessions()  # a kernel from an earlier run
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
        except BaseException:
            browser.close()
            raise
        try:
            page.goto(lab.page_url("dashboard.ipynb"))
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            # The kernel is connected and idle (the status bar says so).
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for()
            run_all(page, 2)
            dashboard = page.locator(".hakit-dashboard")
            dashboard.wait_for()
            table = page.locator(".hakit-live-table")
            for name in ("beta", "gamma"):
                table.locator("tr", has_text=name).locator(".hakit-conn-streaming").wait_for()
            page.locator(".hakit-topology svg .hakit-role-master").wait_for()
            # The second cell ran to its end: the write arrived on beta.
            page.locator(".jp-OutputArea-output", has_text="'hello'").wait_for()
            dashboard.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "dashboard-light.png"))

            # Force master gamma, by clicks.
            page.select_option(".hakit-node-pick select", "gamma")
            page.locator(".hakit-btn-force button, button.hakit-btn-force").first.click()
            gamma = table.locator("tr", has_text="gamma")
            gamma.locator(".hakit-role-cell-master").wait_for()
            table.locator("tr", has_text="alpha").locator(".hakit-role-cell-down").wait_for()
            table.locator("tr", has_text="beta").locator(".hakit-conn-streaming").wait_for()
            page.locator(".hakit-status", has_text="BECOMES_MASTER").wait_for()
            page.locator(".hakit-tabs .lm-TabBar-tab", has_text="Stop log").click()
            row = page.locator(".hakit-log-row", has_text="BECOMES_MASTER")
            row.first.wait_for()
            assert "gamma" in row.first.inner_text()
            assert "now the master" in row.first.inner_text()
            dashboard.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "dashboard-light-after-force.png"))
            dashboard.screenshot(path=str(SHOTS / "dashboard.png"))

            # The dark theme, from JupyterLab's own menu.
            page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
            page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark").first.click()
            page.wait_for_selector("body[data-jp-theme-name='JupyterLab Dark']", state="attached")
            page.wait_for_function(
                "getComputedStyle(document.querySelector('.hakit-live-table td'))"
                ".color !== 'rgba(0, 0, 0, 0.87)'"
            )
            page.locator(".hakit-tabs .lm-TabBar-tab", has_text="Controls").click()
            dashboard.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "dashboard-dark.png"))
            page.locator(".hakit-tabs .lm-TabBar-tab", has_text="Stop log").click()
            row.first.wait_for()
            page.screenshot(path=str(SHOTS / "dashboard-dark-log.png"))
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure.png"))
            raise
        finally:
            browser.close()
    for session in lab.api("GET", "/api/sessions") or []:
        lab.api("DELETE", f"/api/sessions/{session['id']}")  # type: ignore[index]


PROCESS_CELLS = [
    "import hakit.jupyter as hj",
    "cluster = hj.open_cluster(seed=7)\n"
    "cluster.add_node('alpha')\n"
    "cluster.make_master('alpha')\n"
    "beta = await cluster.spawn_node('beta', master='alpha')\n"
    "cluster",
]


def test_a_node_process_in_the_dashboard_by_click(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in PROCESS_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, lab.root / "processes.ipynb")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            # A workspace of its own: the other test's notebook tab is not restored beside it.
            page.goto(f"{lab.url}/lab/workspaces/processes/tree/processes.ipynb?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for()
            run_all(page, len(PROCESS_CELLS))
            dashboard = page.locator(".hakit-dashboard")
            dashboard.wait_for()
            beta = page.locator(".hakit-live-table tr", has_text="beta")
            beta.locator(".hakit-conn-streaming").wait_for()  # a process replica of alpha
            badge = beta.locator(".hakit-proc")
            badge.wait_for()
            assert badge.inner_text().startswith("pid ")
            page.locator(".hakit-topology svg .hakit-process").wait_for()  # dashed, in the drawing
            dashboard.scroll_into_view_if_needed()
            dashboard.screenshot(path=str(SHOTS / "dashboard-process.png"))

            # Pause and resume (SIGSTOP / SIGCONT), then kill -9, by clicks.
            page.select_option(".hakit-process-pick select", "beta")
            page.locator("button.hakit-btn-pause, .hakit-btn-pause button").first.click()
            beta.locator(".hakit-proc-off", has_text="paused").wait_for()
            page.locator("button.hakit-btn-resume, .hakit-btn-resume button").first.click()
            beta.locator(".hakit-proc-off").wait_for(state="detached")
            page.locator("button.hakit-btn-kill, .hakit-btn-kill button").first.click()
            beta.locator(".hakit-proc-off", has_text="killed (SIGKILL)").wait_for()
            beta.locator(".hakit-role-cell-down").wait_for()
            page.locator(".hakit-topology svg .hakit-process-off").wait_for()
            page.locator(".hakit-tabs .lm-TabBar-tab", has_text="Stop log").click()
            page.locator(".hakit-log-row", has_text="SIGKILL").first.wait_for()
            dashboard.scroll_into_view_if_needed()
            dashboard.screenshot(path=str(SHOTS / "dashboard-process-killed.png"))
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure-process.png"))
            raise
        finally:
            browser.close()
    for session in lab.api("GET", "/api/sessions") or []:
        lab.api("DELETE", f"/api/sessions/{session['id']}")  # type: ignore[index]
