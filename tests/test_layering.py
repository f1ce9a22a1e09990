"""The import rules of DESIGN.md section 1, checked on the real source tree.

The static checks walk the package directories, so a new module is covered as soon as it
exists. Every import statement counts, including function-local ones and those guarded by
``if TYPE_CHECKING:`` (a type-only import still couples the layers), plus
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAKIT = ROOT / "hakit"

#: Standard-library modules the sans-I/O core must not use: sockets, event loops, threads,
#: processes and the clock (time is an argument, ``now``).
PROTOCOL_FORBIDDEN_STDLIB = frozenset(
    {
        "socket",
        "_socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "subprocess",
        "signal",
        "time",
    }
)
PROTOCOL_ALLOWED_THIRD_PARTY = frozenset({"msgpack"})


@dataclass(frozen=True)
class Import:
    """One imported module name, resolved to an absolute dotted name."""

    name: str
    lineno: int
    #: For ``from X import a``: the module ``X`` and the imported name ``a``.
    from_module: str | None = None
    attr: str | None = None

    @property
    def top(self) -> str:
        return self.name.partition(".")[0]


def module_name(path: Path) -> tuple[str, bool]:
    """Return the dotted name of a source file under the repository, and whether it is a package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Resolve ``from <level dots><target> import ...`` inside `module` to an absolute name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"relative import beyond the top-level package in {module}")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def iter_imports(source: str, module: str, is_package: bool) -> Iterator[Import]:
    """Yield every module a source file imports (absolute names)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(module, is_package, node.level, node.module)
            else:
                assert node.module is not None
                base = node.module
            yield Import(base, node.lineno)
            for alias in node.names:
                if alias.name != "*":
                    # `from pkg import sub` may import the submodule `pkg.sub`.
                    yield Import(f"{base}.{alias.name}", node.lineno, base, alias.name)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            arg = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                yield Import(arg.value, node.lineno)


def package_imports(package: str) -> Iterator[tuple[Path, Import]]:
    """Yield ``(file, import)`` for every Python file under the package directory."""
    directory = ROOT.joinpath(*package.split("."))
    files = sorted(directory.rglob("*.py"))
    assert files, f"no modules found under {directory}"
    for path in files:
        module, is_package = module_name(path)
        for imp in iter_imports(path.read_text(encoding="utf-8"), module, is_package):
            yield path, imp


def where(path: Path, imp: Import) -> str:
    return f"{path.relative_to(ROOT)}:{imp.lineno}: {imp.name}"


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with the repository first on ``sys.path``."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the scanner itself (so the real checks below cannot pass vacuously) ----------------------


def test_scanner_resolves_relative_and_absolute_imports() -> None:
    source = textwrap.dedent(
        """
        import os.path
        from . import _codec as c
        from .._runtime._node import Node
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import trio
        def f():
            import socket
            return importlib.import_module("time"), __import__("select")
        """
    )
    names = {i.name for i in iter_imports(source, "hakit.protocol._x", False)}
    assert {
        "os.path",
        "hakit.protocol",
        "hakit.protocol._codec",
        "hakit._runtime._node",
        "hakit._runtime._node.Node",
        "typing",
        "trio",
        "socket",
        "time",
        "select",
    } <= names
    with pytest.raises(ValueError, match="beyond"):
        list(iter_imports("from ... import x", "hakit.protocol._x", False))
    # In a package's __init__, one dot is the package itself.
    init = {i.name for i in iter_imports("from . import _a", "hakit.storage", True)}
    assert init == {"hakit.storage", "hakit.storage._a"}


def test_scanner_flags_violations() -> None:
    assert protocol_violations("import trio\nimport time\nfrom .. import storage\n") == [
        "trio",
        "time",
        "hakit",
        "hakit.storage",
    ]
    assert protocol_violations("import msgpack\nimport enum\nfrom . import _codec\n") == []
    assert runtime_violations("from .._runtime import _node", "hakit.storage._x") == [
        "hakit._runtime",
        "hakit._runtime._node",
    ]
    assert runtime_violations("from .. import _runtime", "hakit.transports._x") == [
        "hakit._runtime"
    ]
    assert runtime_violations("from ..protocol import FrameDecoder", "hakit.storage._x") == []


# -- (a) the sans-I/O core -----------------------------------------------------------------


def protocol_violation(imp: Import) -> bool:
    """Whether a module of `hakit.protocol` may not make this import."""
    if is_within(imp.name, "hakit.protocol"):
        return False
    if imp.from_module is not None and not is_within(imp.from_module, "hakit"):
        return False  # `from typing import Any`: an attribute of a module judged already
    top = imp.top
    if top in PROTOCOL_ALLOWED_THIRD_PARTY:
        return False
    return top not in sys.stdlib_module_names or top in PROTOCOL_FORBIDDEN_STDLIB


def protocol_violations(source: str, module: str = "hakit.protocol._x") -> list[str]:
    return [imp.name for imp in iter_imports(source, module, False) if protocol_violation(imp)]


def test_protocol_imports_only_stdlib_and_msgpack() -> None:
    bad = [
        where(path, imp)
        for path, imp in package_imports("hakit.protocol")
        if protocol_violation(imp)
    ]
    assert not bad, (
        "hakit.protocol must import only the standard library (no I/O, no clock) and msgpack:\n"
        + "\n".join(bad)
    )


def test_importing_protocol_loads_no_io_or_event_loop() -> None:
    # `hakit/__init__.py` imports the runtime (trio), so `hakit` is stubbed as a bare package
    # to import `hakit.protocol` alone, exactly as another runtime would.
    result = run_python(
        """
        import sys, types
        before = set(sys.modules)
        pkg = types.ModuleType("hakit")
        pkg.__path__ = ["hakit"]
        sys.modules["hakit"] = pkg
        import hakit.protocol
        assert hakit.protocol.__file__.endswith("protocol/__init__.py"), hakit.protocol.__file__
        forbidden = ("trio", "socket", "_socket", "ipywidgets", "asyncio", "selectors", "select",
                     "threading")
        loaded = sorted(
            name for name in set(sys.modules) - before
            if name.partition(".")[0] in forbidden
        )
        print(" ".join(loaded))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing hakit.protocol loaded: {result.stdout}"


# -- (b) storage and transports stay below the runtime -------------------------------------


def runtime_violations(source: str, module: str) -> list[str]:
    return [
        imp.name
        for imp in iter_imports(source, module, False)
        if is_within(imp.name, "hakit._runtime")
    ]


@pytest.mark.parametrize("package", ["hakit.storage", "hakit.transports"])
def test_storage_and_transports_do_not_import_the_runtime(package: str) -> None:
    bad = [
        where(path, imp)
        for path, imp in package_imports(package)
        if is_within(imp.name, "hakit._runtime")
    ]
    assert not bad, f"{package} must not import the runtime:\n" + "\n".join(bad)


def test_storage_does_not_import_trio() -> None:
    bad = [where(path, imp) for path, imp in package_imports("hakit.storage") if imp.top == "trio"]
    assert not bad, "hakit.storage must not import trio:\n" + "\n".join(bad)


# -- (c) `import hakit` stays light --------------------------------------------------------


def test_import_hakit_does_not_import_ipywidgets() -> None:
    assert (HAKIT / "__init__.py").is_file(), "hakit/__init__.py is missing"
    result = run_python(
        """
        import sys
        import hakit
        print(hakit.__file__)
        print(" ".join(sorted(n for n in sys.modules if n.partition(".")[0] == "ipywidgets")))
        """
    )
    assert result.returncode == 0, result.stderr
    file, _, loaded = result.stdout.partition("\n")
    assert Path(file).resolve() == HAKIT / "__init__.py"
    assert loaded.strip() == "", f"import hakit loaded ipywidgets: {loaded}"


# -- (d) widgets use the public API only ----------------------------------------------------

#: Public subpackages a widget may import from by path (DESIGN.md section 1).
PUBLIC_SUBPACKAGES = frozenset({"jupyter", "widgets"})


def public_hakit_names() -> set[str]:
    """Return ``hakit.__all__``, read statically from ``hakit/__init__.py``."""
    tree = ast.parse((HAKIT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            return set(ast.literal_eval(node.value))
    raise AssertionError("hakit/__init__.py defines no literal __all__")


def widget_violations(source: str, module: str, is_package: bool, public: set[str]) -> list[str]:
    bad = []
    tree = ast.parse(source)
    hakit_aliases = set()
    for imp in iter_imports(source, module, is_package):
        if not is_within(imp.name, "hakit") or is_within(imp.name, "hakit.widgets"):
            continue
        if imp.name == "hakit":
            continue
        if imp.from_module == "hakit":
            if imp.attr not in public and imp.attr not in PUBLIC_SUBPACKAGES:
                bad.append(f"{imp.name} (not in hakit.__all__)")
            continue
        parts = imp.name.split(".")
        if parts[1] not in PUBLIC_SUBPACKAGES or any(p.startswith("_") for p in parts[1:]):
            bad.append(imp.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            hakit_aliases.update(a.asname or a.name for a in node.names if a.name == "hakit")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in hakit_aliases
            and node.attr not in public
            and node.attr not in PUBLIC_SUBPACKAGES
        ):
            bad.append(f"hakit.{node.attr} (attribute, line {node.lineno})")
    return bad


def test_widget_checker() -> None:
    public = {"Cluster", "StopReason"}
    ok = "import hakit\nfrom hakit import Cluster\nfrom . import _view\nx = hakit.StopReason\n"
    assert widget_violations(ok, "hakit.widgets._d", False, public) == []
    bad = (
        "import hakit as h\nfrom hakit import Node\nfrom hakit._runtime import _node\n"
        "from ..protocol import Kind\ny = h._runtime\n"
    )
    assert widget_violations(bad, "hakit.widgets._d", False, public) == [
        "hakit.Node (not in hakit.__all__)",
        "hakit._runtime",
        "hakit._runtime._node",
        "hakit.protocol",
        "hakit.protocol.Kind",
        "hakit._runtime (attribute, line 5)",
    ]


def test_widgets_use_only_public_names() -> None:
    directory = HAKIT / "widgets"
    if not directory.is_dir():
        pytest.skip("hakit/widgets/ does not exist yet")
    public = public_hakit_names()
    bad = []
    for path in sorted(directory.rglob("*.py")):
        module, is_package = module_name(path)
        source = path.read_text(encoding="utf-8")
        bad += [
            f"{path.relative_to(ROOT)}: {v}"
            for v in widget_violations(source, module, is_package, public)
        ]
    assert not bad, "hakit.widgets must use only public hakit names:\n" + "\n".join(bad)


# -- (e) the notebook layer is opt-in -------------------------------------------------------


def test_import_hakit_does_not_load_the_notebook_layer() -> None:
    result = run_python(
        """
        import sys
        import hakit
        print(" ".join(sorted(
            n for n in sys.modules
            if n.startswith(("hakit.jupyter", "hakit.widgets", "IPython", "ipykernel"))
        )))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import hakit loaded: {result.stdout}"


def test_import_hakit_jupyter_does_not_import_ipywidgets() -> None:
    # The live cluster works without the widgets extra; the dashboard loads on display.
    result = run_python(
        """
        import sys
        import hakit.jupyter
        print(" ".join(sorted(n for n in sys.modules if n.startswith(("ipywidgets", "anywidget")))))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import hakit.jupyter loaded: {result.stdout}"


def test_torture_runner_uses_only_public_names() -> None:
    # The fault runner (torture/) drives hakit as a user would, so that what it finds is
    # reachable through the public API.
    public = public_hakit_names()
    bad = []
    for path in sorted((ROOT / "torture").rglob("*.py")):
        module, is_package = module_name(path)
        source = path.read_text(encoding="utf-8")
        bad += [
            f"{path.relative_to(ROOT)}: {v}"
            for v in widget_violations(source, module, is_package, public)
        ]
    assert not bad, "torture/ must use only public hakit names:\n" + "\n".join(bad)
