"""What link security costs: sync commit (1 and 16 writers) and channel round trips with no
security, with a cluster secret (authentication), and with TLS, side by side.

Each mode has its own master (in this process) and replica process (or requester node and
responder process), all open at once, and the modes are measured in alternation (plain,
auth, tls, plain, auth, tls...), so each auth or TLS repetition stands beside a plain one
taken moments before on the same machine: the goals are judged on those pairs' ratios.
Authentication happens once per connection, so after the handshake it should cost
nothing measurable; TLS encrypts every frame.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import hakit

from . import _proc
from ._ceiling import Config
from ._channels import _requests
from ._load import RETRIES, repetitions
from ._replication import _writers, attach
from ._util import Figure, latency_us, log

MODES = ("plain", "auth", "tls")
SECRET = "bench-cluster-secret-0123456789abcdef"
#: The environment a child reads its security from (see `bench._child.security`).
ENV_SECRET, ENV_TLS = "HAKIT_BENCH_SECRET", "HAKIT_BENCH_TLS"


def _pki(root: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": root / "ca.pem", "cert": root / "node.pem", "key": root / "node.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


def _node_kwargs(mode: str, pki: dict[str, str]) -> dict[str, Any]:
    if mode == "auth":
        return {"secret": SECRET}
    if mode == "tls":
        # Server certificate on every node; clients verify it against the test CA.
        return {"tls": hakit.TlsConfig.from_files(cert=pki["cert"], key=pki["key"], ca=None)}
    return {}


@contextmanager
def _child_env(mode: str, pki: dict[str, str]) -> Any:
    """Children inherit the environment at spawn: set the mode's variables meanwhile."""
    saved = {key: os.environ.get(key) for key in (ENV_SECRET, ENV_TLS)}
    os.environ.pop(ENV_SECRET, None)
    os.environ.pop(ENV_TLS, None)
    if mode == "auth":
        os.environ[ENV_SECRET] = SECRET
    elif mode == "tls":
        os.environ[ENV_TLS] = f"{pki['cert']}:{pki['key']}:{pki['ca']}"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@asynccontextmanager
async def _pki_dir() -> AsyncIterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="hakit-bench-pki-") as root:
        yield _pki(Path(root))


async def security(cfg: Config) -> dict[str, Figure]:
    """Every figure of the three modes: ``<mode>_sync_1``, ``<mode>_sync_16``,
    ``<mode>_channel_1`` (auth and tls figures paired with the plain ones)."""
    figures: dict[str, Figure] = {}
    # Nine figures: a quick run (one repetition each) redoes a disturbed one at most once.
    retries = 1 if cfg.reps <= 1 else RETRIES
    async with _pki_dir() as pki, AsyncExitStack() as stack:
        # Every child is started at once (they import hakit in parallel), each under its
        # mode's environment, and killed when the step ends.
        replicas = _spawn(stack, "replica", pki, lambda mode: [f"s-{mode}"])
        responders = _spawn(stack, "responder", pki, lambda mode: [])
        masters: dict[str, hakit.Node] = {}
        for mode in MODES:
            master = await stack.enter_async_context(
                hakit.open_node(f"master-{mode}", address="127.0.0.1:0", **_node_kwargs(mode, pki))
            )
            master.set_master_params(hakit.MasterParams())
            proc = replicas[mode]
            proc.ready = await proc.expect("ready", 60.0)
            await attach(master, proc)
            masters[mode] = master
        for writers in (1, 16):
            figs = {
                mode: Figure("txn/s", extra={"writers": writers, "mode": mode}) for mode in MODES
            }
            for mode in MODES:
                await _writers(masters[mode], writers, cfg.warmup, [])
            for _ in range(cfg.reps):
                for mode in MODES:
                    async for _ in repetitions(figs[mode], 1, retries):
                        lat: list[float] = []
                        rate, _missing = await _writers(masters[mode], writers, cfg.duration, lat)
                        figs[mode].add(rate, **latency_us(lat))
            for mode in MODES:
                figures[f"{mode}_sync_{writers}"] = figs[mode]
            _log_modes(f"sync commit, {writers} writer(s)", figs)
        figs = {mode: Figure("req/s", extra={"outstanding": 1, "mode": mode}) for mode in MODES}
        channels: dict[str, hakit.Channel] = {}
        for mode in MODES:
            responder = responders[mode]
            responder.ready = await responder.expect("ready", 60.0)
            kwargs = _node_kwargs(mode, pki)
            if mode == "tls":  # a requester only dials: it needs the CA, not a certificate
                kwargs = {"tls": hakit.TlsConfig.from_files(ca=pki["ca"])}
            node = await stack.enter_async_context(hakit.open_node(f"requester-{mode}", **kwargs))
            channels[mode] = node.channel(responder.ready["address"])
            await _requests(channels[mode], 1, cfg.warmup)
        for _ in range(cfg.reps):
            for mode in MODES:
                async for _ in repetitions(figs[mode], 1, retries):
                    rate, lat = await _requests(channels[mode], 1, cfg.duration)
                    figs[mode].add(rate, **latency_us(lat))
        for mode in MODES:
            figures[f"{mode}_channel_1"] = figs[mode]
        _log_modes("channel request/response, 1 outstanding", figs)
    for key, fig in figures.items():
        if not key.startswith("plain"):
            fig.extra["paired_with_ceiling"] = True  # repetition i beside plain's i
    return figures


def _spawn(
    stack: AsyncExitStack, role: str, pki: dict[str, str], args: Callable[[str], list[str]]
) -> dict[str, _proc.Child]:
    procs: dict[str, _proc.Child] = {}
    for mode in MODES:
        with _child_env(mode, pki):
            procs[mode] = _proc.Child(role, args(mode))
        stack.callback(procs[mode].kill)
    return procs


def _log_modes(what: str, figs: dict[str, Figure]) -> None:
    plain = figs["plain"].median
    parts = [
        f"{mode} {fig.median:,.0f} {fig.unit} ({fig.median / plain:.2f} x plain)"
        for mode, fig in figs.items()
    ]
    log(f"security, {what}: " + ", ".join(parts))
