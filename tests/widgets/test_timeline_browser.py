"""The timeline in a real browser: JupyterLab on 127.0.0.1, Playwright with Debian's chromium.

A notebook runs a handshake and a write on a live cluster and shows its `Timeline`; the page
must draw the HELLO, WELCOME, TXNS and ACK arrows between the two lanes, show an arrow's
fields on hover, and the scrubber's table. Screenshots go to ``build/screenshots/``. Every wait
is on a page or server condition, never a fixed delay.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
playwright_sync = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SERVER_TIMEOUT = 90.0
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(url: str, token: str, method: str, path: str) -> object:
    request = urllib.request.Request(
        f"{url}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get chromium)")
    root = tmp_path_factory.mktemp("lab")
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, root / "timeline.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
        "PYTHONPATH": str(ROOT),
    }
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
            "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:  # a condition checked every 0.2 s: the server answers
            try:
                _api(url, token, "GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start") from None
                time.sleep(0.2)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_the_timeline_draws_a_handshake_in_jupyterlab(
    lab: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\ntimeline screenshots: {SHOTS}")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            page.goto(f"{url}/lab/tree/timeline.ipynb?token={token}")
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
    for session in _api(url, token, "GET", "/api/sessions") or []:  # type: ignore[union-attr]
        _api(url, token, "DELETE", f"/api/sessions/{session['id']}")  # type: ignore[index]
