"""Run directories, metrics.jsonl, TensorBoard and the progress line."""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
from typing import Any

import numpy as np


class RunDirectoryExistsError(FileExistsError):
    """An output directory already holds a run and neither resume nor overwrite was asked."""


def new_run_dir(root: str, name: str) -> str:
    """``root/name/<UTC time>``, unique."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, name, stamp)
    suffix = 1
    while os.path.exists(path):
        path = os.path.join(root, name, f"{stamp}-{suffix}")
        suffix += 1
    return path


def prepare_run_dir(path: str, *, resume: bool = False, overwrite: bool = False) -> str:
    """Create ``path`` for a new run; never clobber an existing one by accident.

    An existing non-empty directory is an error unless ``resume`` (continue the
    run in it) or ``overwrite`` (delete it first) says otherwise.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: pick one")
    exists = os.path.isdir(path) and bool(os.listdir(path))
    if resume:
        if not exists:
            raise FileNotFoundError(f"--resume {path}: no run there to resume")
    elif exists:
        if not overwrite:
            raise RunDirectoryExistsError(
                f"output directory {path} already holds a run; pass --resume to continue it "
                f"or --overwrite to replace it"
            )
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__"):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str, data: dict[str, Any]) -> None:
    """``data`` as indented, key-sorted JSON; arrays and numpy scalars converted."""
    with open(path, "w") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=True)


class MetricsWriter:
    """Appends one JSON object per update to ``metrics.jsonl`` (and TensorBoard if asked).

    On resume the file is first cut back to the restored step, so a run that
    crashed after its last checkpoint does not log the same updates twice.
    """

    def __init__(self, run_dir: str | None, tensorboard: bool = False, resume_update: int | None = None):
        self.path = os.path.join(run_dir, "metrics.jsonl") if run_dir else None
        if self.path and resume_update is not None and os.path.exists(self.path):
            with open(self.path) as f:
                kept = [line for line in f if json.loads(line)["update"] <= resume_update]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a") if self.path else None
        self._tb = None
        if tensorboard and run_dir:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self._file:
            self._file.write(json.dumps(_jsonable(record)) + "\n")
        if self._tb:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("update", "env_steps"):
                    self._tb.add_scalar(key, value, record["env_steps"])

    def flush(self) -> None:
        if self._file:
            self._file.flush()
        if self._tb:
            self._tb.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """``run_dir/metrics.jsonl`` as a list of dicts, one per logged update."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
