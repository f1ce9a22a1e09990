"""binder/ is what repo2docker's Python build pack expects, with exact pins (fast checks).

The slow proof, a fresh environment built from these files running every notebook, is
``make test-binder`` (tests/binder/build.sh), which .ci/run runs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from . import pins

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"


def pinned() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line)
        assert match, f"not an exact pin (name==version): {line!r}"
        name = pins.canonical(match[1])
        assert name not in found, f"{name} is pinned twice"
        found[name] = Version(match[2])
    return found


def test_requirements_pin_everything_hakit_and_jupyter_need() -> None:
    versions = pinned()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [*project["dependencies"], *project["optional-dependencies"]["widgets"]]
    needed += [r for r in project["optional-dependencies"]["jupyter"] if "hakit" not in r]
    needed += ["jupyterlab>=4"]
    for text in needed:
        req = Requirement(text)
        name = pins.canonical(req.name)
        assert name in versions, f"binder/requirements.txt does not pin {name}"
        assert versions[name] in req.specifier, f"{name}=={versions[name]} is not {req.specifier}"
    assert "hakit" not in versions, "hakit is installed by postBuild, from this repository"


def test_runtime_matches_the_python_hakit_supports() -> None:
    text = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", text)
    assert match, f"runtime.txt must read python-X.Y, not {text!r}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert Version(match[1]) in SpecifierSet(project["requires-python"])


def test_post_build_installs_hakit_and_stops_on_error() -> None:
    post_build = BINDER / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    lines = [line.strip() for line in post_build.read_text().splitlines()]
    assert lines[0].startswith("#!")
    assert any(re.match(r"set -\w*e", line) for line in lines), "postBuild must set -e"
    assert any(re.search(r"pip install .*--no-deps.* \.$", line) for line in lines)
    # Only the files repo2docker reads: a root-level config would be ignored beside binder/.
    assert not (ROOT / ".binder").exists()
    assert {p.name for p in BINDER.iterdir()} <= {"requirements.txt", "runtime.txt", "postBuild"}


def test_readme_badge_launches_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"\(https://mybinder\.org/v2/gh/([^)\s]+)\)", readme)
    assert badges, "the README has no Binder launch badge"
    for url in badges:
        assert url.endswith("?labpath=notebooks%2F01-quickstart.ipynb"), url
    assert (ROOT / "notebooks" / "01-quickstart.ipynb").exists()
    # The badge is the setting, not a guess: [tool.hakit.binder] names repository and ref.
    from .badge import badge_url, setting

    (badge,) = badges
    assert f"https://mybinder.org/v2/gh/{badge}" == badge_url(*setting()), "make binder-badge"
    assert "[tool.hakit.binder]" in readme
    assert "tag" in readme[readme.index("mybinder") :].split("\n## ")[0]
