"""The timeline in a real browser: JupyterLab on 127.0.0.1, Playwright with Debian's chromium.

A notebook runs a handshake and a write on a live cluster and shows its `Timeline`; the page
must draw the HELLO, WELCOME, TXNS and ACK arrows between the two lanes, show an arrow's
fields on hover, and the scrubber's table. Screenshots go to ``build/screenshots/``. Every wait
is on a page or server condition, never a fixed delay.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

nbformat = pytest.importorskip("nbformat")
playwright_sync = pytest.importorskip("playwright.sync_api")

from ..jupyterlab import CHROMIUM, SHOTS, Lab, running_lab, write_notebook  # noqa: E402

PAGE_TIMEOUT_MS = 60_000

CELLS = [
    "import hakit.jupyter as hj\nfrom hakit.widgets import Timeline",
    "cluster = hj.open_cluster(seed=1, name='timeline-browser')\n"
    "for name in ('alpha', 'beta'):\n"
    "    cluster.add_node(name)\n"
    "cluster.make_master('alpha')\n"
    "cluster.attach('beta', 'alpha')\n"
    "await cluster.wait_synced('beta')\n"
    "await cluster.write('greeting', 'hello')\n"
    "Timeline(cluster.cluster.events, title='a handshake')",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "timeline.ipynb", CELLS)
    with running_lab(root) as server:
        yield server


def test_the_timeline_draws_a_handshake_in_jupyterlab(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\ntimeline screenshots: {SHOTS}")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            page.goto(lab.page_url("timeline.ipynb"))
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for()
            page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
            page.keyboard.press("Escape")
            for _ in CELLS:
                page.keyboard.press("Shift+Enter")
            timeline = page.locator(".hakit-timeline")
            timeline.wait_for()
            for kind in ("HELLO", "WELCOME", "TXNS", "ACK"):
                page.locator(f'.hakit-tl-msg[data-kind="{kind}"]').first.wait_for()
            lanes = [t.text_content() for t in page.locator(".hakit-tl-lane").all()]
            assert lanes == ["alpha", "beta"]
            assert page.locator(".hakit-tl-msg").count() >= 6
            timeline.scroll_into_view_if_needed()
            timeline.screenshot(path=str(SHOTS / "timeline.png"))
            page.locator('.hakit-tl-msg[data-kind="HELLO"] .hakit-tl-hit').first.hover()
            tip = page.locator(".hakit-tl-tip")
            tip.wait_for(state="visible")
            assert "beta \u2192 alpha" in tip.inner_text() and "cluster" in tip.inner_text()
            timeline.screenshot(path=str(SHOTS / "timeline-hover.png"))
            state = page.locator(".hakit-tl-state")
            assert "alpha" in state.inner_text() and "master" in state.inner_text()
        except BaseException:
            page.screenshot(path=str(SHOTS / "timeline-failure.png"))
            raise
        finally:
            browser.close()
    lab.end_sessions()
