"""Point the README's Binder badge at the repository and ref set in pyproject.toml.

The repository's GitHub home is not something a clone knows (it has no remote of record), so
it is one named setting, ``[tool.hakit.binder]`` in ``pyproject.toml``: ``repository``
(``owner/name`` on GitHub) and ``ref`` (a branch or, for a workshop, a tag). Change them
there and run ``make binder-badge``; ``tests/binder/test_binder_files.py`` checks that the
badge and the setting agree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The notebook the badge opens.
NOTEBOOK = "notebooks/01-quickstart.ipynb"
_BADGE = re.compile(r"\(https://mybinder\.org/v2/gh/[^)\s]+\)")


def setting() -> tuple[str, str]:
    """Return ``(repository, ref)`` from ``[tool.hakit.binder]``."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        binder = tomllib.load(file)["tool"]["hakit"]["binder"]
    repository, ref = str(binder["repository"]), str(binder["ref"])
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise ValueError(f"[tool.hakit.binder] repository must be owner/name, not {repository!r}")
    return repository, ref


def badge_url(repository: str, ref: str) -> str:
    """The launch address of the badge."""
    where = f"{repository}/{quote(ref, safe='')}"
    return f"https://mybinder.org/v2/gh/{where}?labpath={quote(NOTEBOOK, safe='')}"


def main() -> int:
    """Rewrite the badge's address in README.md."""
    url = badge_url(*setting())
    text = README.read_text()
    new, count = _BADGE.subn(f"({url})", text)
    if count != 1:
        print(f"README.md has {count} Binder badges, expected one", file=sys.stderr)
        return 1
    README.write_text(new)
    print(f"README.md: the Binder badge opens {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
