"""JupyterLab on 127.0.0.1 for the browser tests, driven by Playwright with Debian's chromium.

``make test`` installs the ``chromium`` package when it is missing; Playwright is pointed at
that binary and never downloads a browser of its own (``playwright install`` cannot reach the
network here). Every wait is on a server or page condition, never a fixed delay.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where the browser tests save their screenshots (each test prints the path).
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Seconds allowed for the server to come up.
SERVER_TIMEOUT = 90.0


@dataclass
class Lab:
    """A running JupyterLab server: its address, token and root directory."""

    url: str
    token: str
    root: Path

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API; return the decoded answer (None when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page_url(self, notebook: str) -> str:
        """The address that opens `notebook` (a file under `root`) in the lab."""
        return f"{self.url}/lab/tree/{notebook}?token={self.token}"

    def end_sessions(self) -> None:
        """Shut down every kernel session (one left from an earlier test or run)."""
        for session in self.api("GET", "/api/sessions") or []:  # type: ignore[union-attr]
            self.api("DELETE", f"/api/sessions/{session['id']}")  # type: ignore[index]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_settings(settings: Path, theme: str) -> None:
    """JupyterLab user settings: the theme, and no news pop-up over the page."""
    ext = settings / "@jupyterlab" / "apputils-extension"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    (ext / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def write_notebook(path: Path, cells: list[str]) -> None:
    """Write a notebook of code `cells` for a Python 3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)


@contextmanager
def running_lab(root: Path, *, theme: str = "JupyterLab Light") -> Iterator[Lab]:
    """Run JupyterLab on 127.0.0.1 over `root` (hakit importable from this checkout)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get chromium)")
    settings = root / ".settings"
    _write_settings(settings, theme)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
        "PYTHONPATH": str(ROOT),
    }
    log_path = root / "lab.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
            "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    lab = Lab(f"http://127.0.0.1:{port}", token, root)
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:  # wait until the server answers (a condition, checked every 0.2 s)
            try:
                lab.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + log_path.read_text()
                    ) from None
                time.sleep(0.2)
        yield lab
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
