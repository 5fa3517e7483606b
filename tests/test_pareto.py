"""Pareto metrics against pymoo and known fronts; Deep Sea Treasure's dynamics and front."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD

import envs
from envs.mo import deep_sea_treasure as dst
from rljax.core import pareto
from rljax.core.config import ConfigError


def random_front(k: int, n: int, seed: int) -> np.ndarray:
    # Points near the unit sphere's positive orthant: many mutually non-dominated.
    x = np.abs(np.random.default_rng(seed).normal(size=(n, k)))
    return x / np.linalg.norm(x, axis=1, keepdims=True) + 0.05 * np.random.default_rng(seed + 1).random((n, k))


@pytest.mark.parametrize("k, n", [(2, 40), (3, 30), (4, 20)])
@pytest.mark.parametrize("seed", [0, 1])
def test_hypervolume_and_igd_equal_pymoo(k, n, seed):
    points = random_front(k, n, seed)
    ref = np.full(k, -0.1)
    expected = HV(ref_point=-ref)(-points)  # pymoo minimises: negate, as morl-baselines does
    np.testing.assert_allclose(pareto.hypervolume(points, ref), expected, rtol=0, atol=1e-9)
    reference = random_front(k, 50, seed + 10)
    np.testing.assert_allclose(pareto.igd(points, reference), IGD(reference)(points), rtol=0, atol=1e-9)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_crowding_distance_equals_pymoos_times_the_number_of_objectives(k):
    # pymoo divides NSGA-II's sum over objectives by k; the ranking C-MORL selects by is the same.
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    points = random_front(k, 25, seed=k)
    ours, theirs = pareto.crowding_distance(points), k * calc_crowding_distance(-points)  # pymoo minimises
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(ours)
    assert finite.sum() >= 25 - 2 * k
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-12)


def test_hypervolume_ignores_dominated_and_non_dominating_points():
    front = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    assert pareto.hypervolume(front, [0, 0]) == pytest.approx(3 + 2 + 1)  # three unit-width strips
    with_extra = np.vstack([front, [[1.0, 1.0], [-5.0, 10.0]]])  # dominated; not above the reference
    assert pareto.hypervolume(with_extra, [0, 0]) == pytest.approx(6.0)


def test_deep_sea_treasure_front_hypervolume_is_exact():
    # Reference (0, -25) (morl-baselines'): the staircase of treasure t_i at time -s_i adds
    # (t_i - t_{i-1}) * (25 - s_i), with t_0 = 0.
    for variant in ("default", "concave"):
        front = dst.pareto_front(variant)
        t, s = front[:, 0], -front[:, 1]
        exact = float(np.sum(np.diff(np.r_[0.0, t]) * (25.0 - s)))
        np.testing.assert_allclose(pareto.hypervolume(front, [0.0, -25.0]), exact, rtol=1e-12)
        np.testing.assert_allclose(pareto.hypervolume(front, [0.0, -25.0]), HV(ref_point=[0.0, 25.0])(-front))


def test_pareto_front_and_dominance():
    points = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [2.0, 1.0], [0.5, 2.0]])
    np.testing.assert_array_equal(pareto.pareto_front(points), [[2.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(pareto.pareto_mask(points), [True, True, False, True, False])
    assert pareto.dominates([2, 2], [1, 2]) and not pareto.dominates([1, 2], [1, 2])
    assert pareto.cardinality(points) == 2


def test_linear_scalarisation_reaches_only_the_convex_hull():
    # The best front point for each weight on a fine grid: the concave front's two ends only;
    # all of the default front but 20.3 at 14 steps (index 7), which lies inside its hull.
    weights = pareto.simplex_grid(2, 0.0001)
    best = lambda front: set(np.argmax(weights @ front.T, axis=1).tolist())  # noqa: E731
    assert best(dst.pareto_front("concave")) == {0, 9}
    assert best(dst.pareto_front("default")) == set(range(10)) - {7}


def test_expected_utility_sparsity_crowding():
    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    weights = pareto.simplex_grid(2, 0.5)  # (1, 0), (0.5, 0.5), (0, 1)
    np.testing.assert_allclose(weights, [[1, 0], [0.5, 0.5], [0, 1]])
    assert pareto.expected_utility(front, weights) == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    # Sorted gaps 0.5, 0.5 per objective: (4 * 0.25) / (3 - 1).
    assert pareto.sparsity(front) == pytest.approx(0.5)
    assert pareto.sparsity(front[:1]) == 0.0
    np.testing.assert_allclose(pareto.crowding_distance(front), [np.inf, 2.0, np.inf])
    assert len(pareto.simplex_grid(2, 0.01)) == 101 and len(pareto.simplex_grid(3, 0.1)) == 66
    riesz = pareto.riesz_weights(3, 20)
    assert riesz.shape == (20, 3) and np.allclose(riesz.sum(axis=1), 1.0) and (riesz >= -1e-12).all()
    # Well spread: the closest two of 20 Riesz points are 0.259 apart, near the 21-point lattice's 0.283, while
    # 20 uniform random simplex points come within 0.034 of each other (median of 200 draws, at most 0.091).
    gaps = np.linalg.norm(riesz[:, None] - riesz[None], axis=2) + np.diag(np.full(20, np.inf))
    assert gaps.min() > 0.2
    assert all(np.isclose(riesz, corner).all(axis=1).any() for corner in np.eye(3))  # the corners are included


def test_bad_inputs_are_named():
    front = dst.pareto_front("default")
    with pytest.raises(ConfigError, match="ref_point: expected 2 values"):
        pareto.hypervolume(front, [0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match=r"ref_point \[30.0, 0.0\]: no point of the front dominates it"):
        pareto.hypervolume(front, [30.0, 0.0])
    with pytest.raises(ConfigError, match="preference: expected 2 weights"):
        pareto.check_preference([0.2, 0.3, 0.5], 2)
    with pytest.raises(ConfigError, match="non-negative weights summing to 1"):
        pareto.check_preference([0.7, 0.7], 2)
    with pytest.raises(ConfigError, match="non-negative weights summing to 1"):
        pareto.check_preference([1.5, -0.5], 2)
    with pytest.raises(ConfigError, match="points: NaN or inf at row 1"):
        pareto.pareto_front([[0.0, 1.0], [np.nan, 0.0]])
    with pytest.raises(ConfigError, match="step: expected 1/n"):
        pareto.simplex_grid(2, 0.3)


def test_deep_sea_treasure_shortest_paths_give_the_front():
    env, params = envs.make("mo/deep-sea-treasure")
    assert env.reward_shape == (2,) and env.name == "mo/deep-sea-treasure"

    def run(actions):
        obs, state = env.reset(jax.random.PRNGKey(0), params)
        total = np.zeros(2)
        for a in actions:
            obs, state, reward, terminated, truncated, _ = env.step(jax.random.PRNGKey(1), state, a, params)
            total += np.asarray(reward)
            if terminated:
                return total
        raise AssertionError("no treasure reached")

    DOWN, RIGHT = 1, 3
    np.testing.assert_allclose(run([DOWN]), [0.7, -1.0])
    np.testing.assert_allclose(run([RIGHT, DOWN, DOWN]), [8.2, -3.0])
    # The last treasure: along the top row, then down the free column 10, then left into it.
    np.testing.assert_allclose(run([RIGHT] * 9 + [DOWN] * 10), [23.7, -19.0], rtol=1e-6)
    # Moving into the sea floor or off the grid leaves the submarine in place.
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    for a in (0, 2):  # up, left at (0, 0): off the grid
        obs, state, reward, terminated, _, _ = env.step(jax.random.PRNGKey(1), state, a, params)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, state, *_ = env.step(jax.random.PRNGKey(1), state, RIGHT, params)
    obs, state, *_ = env.step(jax.random.PRNGKey(1), state, DOWN, params)
    np.testing.assert_array_equal(obs, [1.0, 1.0])
    obs, state, reward, terminated, _, info = env.step(jax.random.PRNGKey(1), state, 2, params)  # left: 0.7
    assert bool(terminated) and float(reward[0]) == pytest.approx(0.7)
    np.testing.assert_array_equal(info["final_observation"], [1.0, 0.0])  # auto-reset: obs is (0, 0) again
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    # Below a treasure is sea floor: from (1, 1) moving down to (2, 1) is the 8.2 treasure, (3, 1) is floor.
    assert dst.make_map("default")[3, 1] == dst.SEA_FLOOR
    concave, concave_params = envs.make("mo/deep-sea-treasure-concave")
    _, s = concave.reset(jax.random.PRNGKey(0), concave_params)
    _, _, reward, terminated, _, _ = concave.step(jax.random.PRNGKey(1), s, DOWN, concave_params)
    np.testing.assert_allclose(reward, [1.0, -1.0])
    assert bool(terminated)


def test_deep_sea_treasure_map_has_sea_floor_below_each_treasure():
    grid = dst.make_map("default")
    assert grid[2, 0] == dst.SEA_FLOOR and grid[10, 0] == dst.SEA_FLOOR and grid[10, 10] == 0.0
    assert (grid > 0).sum() == 10
    assert jnp.asarray(grid).shape == (11, 11)
