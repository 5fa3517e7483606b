import json
import os
import sys

import pytest

# Tests import the repository's packages, never a same-named installed one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Pin each pytest-xdist worker to its own core before JAX creates its thread pools.
# With two workers sharing two cores, XLA's CPU thread pool wedged (all workers
# idle, the result never ready) in about one run in two; pinned, it did not in
# any of our stress runs, and each worker ran 2x faster (no oversubscription).
# Subprocesses started by tests (notebook kernel, multi-device check) inherit it.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    if len(_cpus) > 1:
        os.sched_setaffinity(0, {_cpus[int(_worker.removeprefix("gw")) % len(_cpus)]})

import rljax  # noqa: E402,F401  (sets XLA's CPU flags before any test creates a backend)


@pytest.fixture
def run_experiment(tmp_path):
    """``run_experiment(name, *args, files=())``: ``python -m experiments NAME ARGS --out DIR --no-progress`` with
    DIR in the test's tmp dir. Asserts exit code 0 and that config.json, result.json and ``files`` (paths under
    DIR) were written; returns ``(DIR, the parsed result.json)``."""
    from experiments.__main__ import main as cli

    def run(name: str, *args: str, files=()):
        out = tmp_path / "run"
        assert cli([name, *args, "--out", str(out), "--no-progress"]) == 0
        for path in ("config.json", "result.json", *files):
            assert (out / path).exists(), path
        return out, json.loads((out / "result.json").read_text())

    return run


@pytest.fixture
def xla_for_cudnn(monkeypatch):
    """Runs ``LMConfig.attention="cudnn"`` code on CPU: the backend reads "gpu" and jax.nn.dot_product_attention
    drops ``implementation`` (XLA stands in for cuDNN). Returns the list of ``(implementation, is_causal,
    query length, key length)`` of every call, in order."""
    import jax

    xla_attention, calls = jax.nn.dot_product_attention, []

    def stand_in(q, k, v, mask=None, is_causal=False, implementation=None):
        calls.append((implementation, is_causal, q.shape[1], k.shape[1]))
        return xla_attention(q, k, v, mask=mask, is_causal=is_causal)

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax.nn, "dot_product_attention", stand_in)
    return calls
