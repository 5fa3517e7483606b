"""Summary statistics over seeds."""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats


def mean_ci95(values) -> dict[str, float]:
    """Mean with a two-sided 95% Student-t interval over independent runs (axis 0)."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1).mean(axis=1)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci95_low": mean, "ci95_high": mean, "n": n}
    half = float(scipy_stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def mean_ci95_by_key(per_seed: list[dict], keys) -> dict[str, dict[str, float]]:
    """``{key: mean_ci95 over the seeds of per_seed[s][key]}`` for each of ``keys``."""
    return {key: mean_ci95([s[key] for s in per_seed]) for key in keys}


def difference_ci95(a, b) -> dict[str, float]:
    """mean(a) - mean(b) for two independent groups of runs, with a 95% Welch interval (normal approximation)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    half = 1.96 * float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))) if min(len(a), len(b)) > 1 else 0.0
    return {"diff": diff, "ci95_low": diff - half, "ci95_high": diff + half}
