"""Pareto fronts and the multi-objective metrics of morl-baselines / MO-Gymnasium, in numpy.

Every objective is *maximised* (returns), as in morl-baselines. A front is an
array ``[n, k]`` of ``n`` points (vector returns) in ``k`` objectives.

    front = pareto_front(points)                         # non-dominated, unique
    hypervolume(front, ref_point=[-100, -100])           # exact, any k
    expected_utility(front, riesz_weights(k, 100))       # morl-baselines' EU weights
    expected_utility(front, simplex_grid(k, 0.01))       # C-MORL's regular grid
    sparsity(front), cardinality(front), igd(front, true_front), crowding_distance(front)

Definitions follow morl-baselines (``morl_baselines/common/performance_indicators.py``):
hypervolume = pymoo's on the negated points; EU = the mean over weights of the
best scalarised point; sparsity = the sum over objectives of the squared gaps
between sorted neighbours, divided by ``n - 1``; IGD = the mean over the
reference front of the distance to the nearest point. Hypervolume and IGD are
checked against pymoo to 1e-9 in the tests.
"""

from __future__ import annotations

import numpy as np

from rljax.core.config import ConfigError


def as_points(points, name: str = "points") -> np.ndarray:
    """``points`` as a finite float64 ``[n, k]`` array, or a ``ConfigError`` naming ``name``."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 1:
        raise ConfigError(f"{name}: expected an array [n, k] of n points in k objectives, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ConfigError(f"{name}: NaN or inf at row {int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])}")
    return points


def dominates(a, b) -> bool:
    """``a`` Pareto-dominates ``b``: at least as good in every objective, better in one."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.all(a >= b) and np.any(a > b))


def pareto_mask(points) -> np.ndarray:
    """``[n]`` bool: the point is not dominated by any other (duplicates all kept)."""
    points = as_points(points)
    ge = (points[:, None, :] >= points[None, :, :]).all(axis=2)  # ge[i, j]: i >= j everywhere
    gt = (points[:, None, :] > points[None, :, :]).any(axis=2)
    dominated_by = ge & gt  # [i, j]: i dominates j
    return ~dominated_by.any(axis=0)


def pareto_front(points) -> np.ndarray:
    """The non-dominated points, each once, sorted by the first objective (descending)."""
    points = as_points(points)
    front = np.unique(points[pareto_mask(points)], axis=0)
    return front[np.argsort(-front[:, 0], kind="stable")]


# ---------------------------------------------------------------- hypervolume


def _hv_sorted(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of ``points`` (each strictly better than ``ref``) by slicing the last objective."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(points[:, 0].max() - ref[0])
    if points.shape[1] == 2:  # a sweep: sort by x descending, add each new strip of y
        order = np.argsort(-points[:, 0], kind="stable")
        volume, best_y = 0.0, ref[1]
        for x, y in points[order]:
            if y > best_y:
                volume += (x - ref[0]) * (y - best_y)
                best_y = y
        return volume
    order = np.argsort(-points[:, -1], kind="stable")
    points = points[order]
    volume = 0.0
    for i in range(len(points)):
        top = points[i, -1]
        bottom = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        if top > bottom:  # the slab between them is covered by the first i+1 points' projections
            slab = points[: i + 1, :-1]
            volume += (top - bottom) * _hv_sorted(slab[pareto_mask(slab)], ref[:-1])
    return volume


def hypervolume(points, ref_point) -> float:
    """Volume of the region dominated by ``points`` and bounded below by ``ref_point`` (maximisation).

    Points that do not strictly dominate ``ref_point`` contribute nothing (as in
    pymoo). A ``ref_point`` of the wrong length, or one that no point dominates
    (a hypervolume of 0, almost always a wrong reference point), is an error.
    """
    points = as_points(points)
    ref = np.asarray(ref_point, dtype=np.float64)
    if ref.shape != (points.shape[1],):
        raise ConfigError(f"ref_point: expected {points.shape[1]} values (one per objective), got shape {ref.shape}")
    above = (points > ref).all(axis=1)
    if not above.any():
        raise ConfigError(
            f"ref_point {ref.tolist()}: no point of the front dominates it (best per objective: "
            f"{points.max(axis=0).tolist()}); the reference point must lie below the front"
        )
    kept = points[above]
    return _hv_sorted(kept[pareto_mask(kept)], ref)


# ---------------------------------------------------------------- utility


def check_preference(weights, num_objectives: int, name: str = "preference") -> np.ndarray:
    """``weights`` as ``[k]`` on the simplex (non-negative, summing to 1), or a ``ConfigError``."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_objectives,):
        raise ConfigError(f"{name}: expected {num_objectives} weights (one per objective), got shape {w.shape}")
    if (w < 0).any() or not np.isclose(w.sum(), 1.0, atol=1e-6):
        raise ConfigError(f"{name}: expected non-negative weights summing to 1 (a point of the simplex), got {w.tolist()}")
    return w


def simplex_grid(num_objectives: int, step: float) -> np.ndarray:
    """Every weight vector on the simplex with coordinates multiple of ``step`` (Das-Dennis lattice).

    ``simplex_grid(2, 0.01)`` is C-MORL's 101 weights; ``simplex_grid(3, 0.1)`` its 66.
    """
    divisions = int(round(1.0 / step))
    if divisions < 1 or not np.isclose(divisions * step, 1.0):
        raise ConfigError(f"step: expected 1/n for a positive integer n, got {step}")

    def compositions(total: int, parts: int):
        if parts == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(total - first, parts - 1):
                yield (first,) + rest

    return np.array(list(compositions(divisions, num_objectives)), dtype=np.float64) / divisions


def riesz_weights(num_objectives: int, num_weights: int, seed: int = 42) -> np.ndarray:
    """``num_weights`` well-spread simplex points by Riesz s-energy (pymoo's "energy" reference directions),
    morl-baselines' ``equally_spaced_weights`` for expected utility (same seed, 42, by default)."""
    from pymoo.util.ref_dirs import get_reference_directions  # noqa: PLC0415  (heavy import, used only here)

    return np.asarray(get_reference_directions("energy", num_objectives, num_weights, seed=seed), dtype=np.float64)


def expected_utility(points, weights) -> float:
    """``mean_w max_p w . p``: the expected best linear utility over the weight set ``[m, k]``."""
    points = as_points(points)
    weights = as_points(weights, "weights")
    if weights.shape[1] != points.shape[1]:
        raise ConfigError(f"weights: expected {points.shape[1]} columns (objectives), got {weights.shape[1]}")
    return float((weights @ points.T).max(axis=1).mean())


# ---------------------------------------------------------------- spread


def sparsity(points) -> float:
    """morl-baselines' sparsity: ``sum_j sum_i (sorted_j[i] - sorted_j[i-1])^2 / (n - 1)``; 0 for n < 2."""
    points = as_points(points)
    if len(points) < 2:
        return 0.0
    gaps = np.diff(np.sort(points, axis=0), axis=0)
    return float((gaps**2).sum() / (len(points) - 1))


def cardinality(points) -> int:
    """The number of distinct non-dominated points."""
    return len(pareto_front(points))


def igd(points, reference_front) -> float:
    """Inverted generational distance: mean over ``reference_front`` of the Euclidean distance to the nearest point."""
    points = as_points(points)
    reference = as_points(reference_front, "reference_front")
    if reference.shape[1] != points.shape[1]:
        raise ConfigError(f"reference_front: expected {points.shape[1]} objectives, got {reference.shape[1]}")
    distances = np.linalg.norm(reference[:, None, :] - points[None, :, :], axis=2)
    return float(distances.min(axis=1).mean())


def crowding_distance(points) -> np.ndarray:
    """NSGA-II crowding distance ``[n]``: per objective, the normalised gap between each point's sorted
    neighbours, summed; the extreme points of every objective get ``inf``."""
    points = as_points(points)
    n, k = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(points[:, j], kind="stable")
        values = points[order, j]
        span = values[-1] - values[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance
