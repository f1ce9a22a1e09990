"""Write ``binder/requirements.txt``: exact pins of what a Binder session needs, from this venv.

The roots are hakit's runtime dependencies, its ``jupyter`` extra and JupyterLab; every
dependency they pull in (markers evaluated here, extras followed) is pinned to the version
installed in the running interpreter, so Binder gets the set the tests ran with.

Run with ``make binder-requirements``.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "binder" / "requirements.txt"
ROOTS = ("trio", "msgpack", "ipywidgets", "anywidget", "ipykernel", "jupyterlab")
HEADER = """\
# Exact pins for Binder (repo2docker's Python build pack: pip install -r binder/requirements.txt).
# hakit's runtime (trio, msgpack), the widgets (ipywidgets, anywidget), ipykernel and JupyterLab,
# with every dependency, from a working venv. hakit itself is installed by binder/postBuild.
# Regenerate: make binder-requirements (writes this file from .venv), then make test-binder.
"""


def canonical(name: str) -> str:
    """Return the normalized project name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...] = ROOTS) -> dict[str, md.Distribution]:
    """Return every installed distribution the roots need, by canonical name."""
    env = default_environment()
    found: dict[str, md.Distribution] = {}
    followed: set[tuple[str, tuple[str, ...]]] = set()
    stack: list[tuple[str, tuple[str, ...]]] = [(name, ()) for name in roots]
    while stack:
        name, extras = stack.pop()
        if (canonical(name), extras) in followed:
            continue
        followed.add((canonical(name), extras))
        dist = md.distribution(name)
        found[canonical(name)] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (*extras, "")
            )
            if wanted:
                stack.append((req.name, tuple(sorted(req.extras))))
    return found


def render() -> str:
    """Return the text of the requirements file."""
    dists = closure()
    lines = [f"{dists[key].metadata['Name']}=={dists[key].version}" for key in sorted(dists)]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    REQUIREMENTS.write_text(render())
    print(f"wrote {REQUIREMENTS.relative_to(ROOT)}", file=sys.stderr)
