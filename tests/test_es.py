"""rljax.core.es: OpenES meta-training maximises, shares task keys as configured, ranks pairs, and resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.core import es
from rljax.core.config import ConfigError

TARGET = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}


def quadratic(params, key):
    """Higher is better; maximum 0 at TARGET. The key adds noise shared by members given the same key."""
    noise = 0.01 * jax.random.normal(key)
    return -sum(jnp.sum((params[k] - TARGET[k]) ** 2) for k in TARGET) + noise


ZERO = {"w": jnp.zeros(3), "b": jnp.array(0.0)}


@pytest.mark.parametrize("shaping", es.FITNESS_SHAPINGS)
def test_meta_train_maximises_the_fitness(shaping):
    config = es.ESConfig(population_size=16, generations=150, sigma=0.1, learning_rate=0.05, progress=False,
                         fitness_shaping=shaping, task_sharing="pair" if shaping == "pairwise" else "population")
    result = es.meta_train(quadratic, ZERO, config, jax.random.PRNGKey(0))
    assert float(quadratic(ZERO, jax.random.PRNGKey(1))) < -13  # start: far from the target
    assert float(-quadratic(result.mean, jax.random.PRNGKey(1))) < 0.1
    assert len(result.records) == 150
    assert result.records[-1]["fitness_mean"] > result.records[0]["fitness_mean"] + 10


def test_pairwise_rank_fitness_scores_each_antithetic_pair():
    fitness = jnp.array([3.0, 1.0, 2.0, 0.0, 5.0, 2.0])  # pairs (0,3), (1,4), (2,5)
    np.testing.assert_array_equal(np.asarray(es.pairwise_rank_fitness(fitness)), [1, 0, 0.5, 0, 1, 0.5])


def test_task_keys_are_shared_as_configured():
    key = jax.random.PRNGKey(0)
    pop = es.task_keys(es.ESConfig(population_size=6, seeds_per_member=2, task_sharing="population"), key)
    assert pop.shape == (6, 2, 2)
    assert (np.asarray(pop) == np.asarray(pop[0])).all()
    assert not (np.asarray(pop[0, 0]) == np.asarray(pop[0, 1])).all()
    pair = es.task_keys(es.ESConfig(population_size=6, seeds_per_member=2, task_sharing="pair"), key)
    np.testing.assert_array_equal(np.asarray(pair[:3]), np.asarray(pair[3:]))  # member i and i + P/2
    assert len({tuple(np.asarray(k).ravel()) for k in pair[:3]}) == 3


def test_antithetic_members_mirror_the_mean():
    strategy = es.make_strategy(es.ESConfig(population_size=8, sigma=0.3), ZERO)
    state = strategy.init(jax.random.PRNGKey(0), TARGET, strategy.default_params)
    population, _ = strategy.ask(jax.random.PRNGKey(1), state, strategy.default_params)
    for k in TARGET:
        np.testing.assert_allclose(np.asarray(population[k][:4] + population[k][4:]) / 2,
                                   np.broadcast_to(np.asarray(TARGET[k]), population[k][:4].shape), atol=1e-5)


def test_fitness_is_the_mean_over_a_members_seeds():
    config = es.ESConfig(population_size=4, seeds_per_member=3)
    keys = es.task_keys(config, jax.random.PRNGKey(0))
    population = jax.tree.map(lambda x: jnp.stack([x] * 4), TARGET)
    got = es.evaluate_population(quadratic, population, keys)
    expected = np.mean([float(quadratic(TARGET, k)) for k in keys[0]])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_interrupted_meta_training_resumes_exactly(tmp_path):
    config = es.ESConfig(population_size=8, generations=6, checkpoint_every=2, progress=False)
    full = es.meta_train(quadratic, ZERO, config, jax.random.PRNGKey(3))
    run = str(tmp_path / "run")
    es.meta_train(quadratic, ZERO, config, jax.random.PRNGKey(3), run_dir=run, stop_after_generations=3)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [1, 2, 3]
    resumed = es.meta_train(quadratic, ZERO, config, jax.random.PRNGKey(3), run_dir=run, resume=True)
    assert [r["generation"] for r in resumed.records] == [4, 5, 6]
    for k in TARGET:
        np.testing.assert_array_equal(np.asarray(resumed.mean[k]), np.asarray(full.mean[k]))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_resuming_under_another_es_config_is_refused(tmp_path):
    run = str(tmp_path / "run")
    es.meta_train(quadratic, ZERO, es.ESConfig(population_size=4, generations=1, progress=False),
                  jax.random.PRNGKey(0), run_dir=run)
    with pytest.raises(ValueError, match="sigma"):
        es.meta_train(quadratic, ZERO, es.ESConfig(population_size=4, generations=2, sigma=0.5, progress=False),
                      jax.random.PRNGKey(0), run_dir=run, resume=True)


def test_meta_params_round_trip_through_safetensors(tmp_path):
    path = str(tmp_path / "meta.safetensors")
    params = {"params": {"Dense_0": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "out": {"kernel": jnp.ones((3, 1))}}}
    es.save_meta_params(path, params)
    loaded = es.load_meta_params(path, params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="missing"):
        es.load_meta_params(path, {"params": {"other": jnp.ones(2)}})
    wrong = jax.tree.map(lambda x: jnp.ones(x.shape + (1,)), params)
    with pytest.raises(ValueError, match="shape"):
        es.load_meta_params(path, wrong)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="population_size.*even"):
        es.ESConfig(population_size=7)
    with pytest.raises(ConfigError, match="fitness_shaping"):
        es.ESConfig(fitness_shaping="rank")
    with pytest.raises(ConfigError, match="task_sharing"):
        es.ESConfig(task_sharing="member")
    with pytest.raises(ConfigError, match="sigma"):
        es.ESConfig(sigma=0.0)

