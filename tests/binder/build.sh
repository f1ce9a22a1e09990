#!/usr/bin/env bash
# Build an environment from binder/ the way repo2docker's Python build pack does, without
# docker: a fresh venv, `pip install -r binder/requirements.txt` from the repository root, then
# binder/postBuild; then execute every teaching notebook in it and check its facts. Slow (it
# downloads ~100 wheels unless pip's cache has them): `make test-binder`, run by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-python3}

want=$(sed -n 's/^python-//p' binder/runtime.txt)
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$want" != "$have" ]; then
    echo "note: binder/runtime.txt asks for Python $want; this build uses $have"
fi

ENV=$(mktemp -d /tmp/hakit-binder.XXXXXX)
trap 'rm -rf "$ENV"' EXIT
"$PY" -m venv "$ENV/venv"
export PATH="$ENV/venv/bin:$PATH"
# Jupyter looks for kernels and settings in the user's folders too: keep this build's own.
export JUPYTER_DATA_DIR="$ENV/data" JUPYTER_CONFIG_DIR="$ENV/config" JUPYTER_RUNTIME_DIR="$ENV/run"
unset PYTHONPATH VIRTUAL_ENV

echo "== pip install -r binder/requirements.txt"
python -m pip install -q --upgrade pip
python -m pip install -q -r binder/requirements.txt
echo "== binder/postBuild"
bash binder/postBuild
python -m pip check

echo "== the installed hakit (not this source tree), its widgets and the lab extensions"
(cd "$ENV" && python - <<'PY'
import importlib.resources, pathlib, sys
import hakit, hakit.jupyter, hakit.widgets
where = pathlib.Path(hakit.__file__).resolve()
assert str(where).startswith(sys.prefix), f"hakit imported from {where}, not the venv"
static = importlib.resources.files("hakit.widgets") / "static"
assert any(p.name.endswith(".js") for p in static.iterdir()), "widget front-end files missing"
print("hakit", hakit.__version__, "from", where.parent)
PY
)
extensions=$(jupyter labextension list 2>&1)
for ext in "@jupyter-widgets/jupyterlab-manager" "anywidget"; do
    grep -q "$ext.*enabled" <<<"$extensions" || { echo "$extensions"; echo "missing: $ext"; exit 1; }
done
echo "prebuilt lab extensions enabled: @jupyter-widgets/jupyterlab-manager, anywidget"

echo "== every notebook, executed in this environment's kernel"
python -m tests.notebooks.run
