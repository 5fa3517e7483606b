"""Run under 8 forced CPU devices (tests/test_sharding.py starts it in a subprocess).

Trains the same seeds on one device and sharded over 8 ("pop" and "envs"),
and prints a JSON report of the largest metric differences and the placement.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rljax  # noqa: F401
from rljax.agents import ppo, sac
from rljax.core import loop as loop_lib
from rljax.core import sharding


def run(trainer, hparams, num_seeds, shard, keys=("loss", "episode_return", "value_loss")):
    result = loop_lib.run(
        trainer, jax.random.PRNGKey(0), hparams, num_seeds=num_seeds,
        loop=loop_lib.LoopConfig(chunk_updates=2, progress=False, shard=shard, checkpoint_every_chunks=0),
    )
    metrics = {k: np.array([r[k] for r in result.records], dtype=float) for k in keys}
    return result, metrics


def max_diff(a, b):
    return {k: float(np.max(np.abs(a[k] - b[k]))) for k in a}


def lm_data_parallel():
    """DPO with each micro-batch split over the 8 devices equals the single-device run."""
    from rljax.lm.model import LMConfig, init_params
    from rljax.lm.train import LMHParams, LMTrainConfig, make_train

    rng = np.random.default_rng(0)
    T, N = 12, 32
    data = {}
    for side in ("chosen", "rejected"):
        data[f"{side}_input_ids"] = rng.integers(3, 40, (N, T))
        data[f"{side}_attention_mask"] = np.ones((N, T), np.int32)
        data[f"{side}_completion_mask"] = np.repeat((np.arange(T) >= 6)[None], N, 0).astype(np.int32)
    model = LMConfig(40, 32, 2, 4, max_position_embeddings=T)
    params = init_params(model, jax.random.PRNGKey(0))
    out = {}
    for parallel in (False, True):
        # SGD, so rounding differences between the two programs stay rounding-sized (see tests/test_lm_train.py)
        config = LMTrainConfig(model=model, objective="dpo", batch_size=16, grad_accum_steps=2, num_epochs=2,
                               data_parallel=parallel, optimizer="sgd")
        trainer = make_train(config, data, init_params=params)
        state, metrics = jax.jit(trainer)(jax.random.PRNGKey(1), LMHParams(learning_rate=0.1))
        out[parallel] = (state, metrics)
    (s1, m1), (s8, m8) = out[False], out[True]
    return {
        "dpo_data_parallel_max_param_diff": max(float(np.max(np.abs(a - b))) for a, b in
                                                zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params))),
        "dpo_data_parallel_max_loss_diff": float(np.max(np.abs(m1["loss"] - m8["loss"]))),
        "dpo_param_change": max(float(np.max(np.abs(a - b))) for a, b in
                                zip(jax.tree.leaves(s1.params), jax.tree.leaves(params))),
    }


def es_population_sharding():
    """One ES generation with the population over 8 devices gives the unsharded fitnesses.

    Exact equality is checked on a smooth fitness of (member, task key), so a member paired with the wrong
    fitness or key is caught. The LPO lifetime (a PPO run per member) is run sharded only, and only checked to
    be finite and spread over the devices: two compiled programs need not agree on it, since a rounding
    difference that changes one action changes a CartPole episode (and LPO's drift, ReLU(MLP(x) - 1e-6) with
    MLP(0) = 0, has its kink at ratio 1, where every first-epoch ratio sits). On one CPU (AMD EPYC, AVX2) 15 of
    16 members agreed exactly and one got 18.0 against 26.5.
    """
    from rljax.agents import lpo
    from rljax.core import es

    # initializer="torch": XLA's CPU runtime hangs on the orthogonal init's QR inside a sharded program.
    config = lpo.LPOConfig(ppo=ppo.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 3,
                                             update_epochs=2, eval_episodes=2, initializer="torch"), temporal=True)
    drift = lpo.init_drift(jax.random.PRNGKey(0), config)
    es_config = es.ESConfig(population_size=16, sigma=1.0, task_sharing="pair")
    strategy = es.make_strategy(es_config, drift)
    state = strategy.init(jax.random.PRNGKey(1), drift, strategy.default_params)

    def smooth_fitness(params, key):
        return -sum(jnp.sum(jnp.square(x - 0.1)) for x in jax.tree.leaves(params)) + jax.random.normal(key)

    out = {}
    for fitness_name, fitness, meshes in (("smooth", smooth_fitness, (None, sharding.make_mesh("pop"))),
                                          ("lpo", lpo.lifetime_fitness(config), (sharding.make_mesh("pop"),))):
        for mesh in meshes:
            generation = jax.jit(es.make_generation(fitness, strategy, es_config, mesh))
            _, fit, _ = generation(state, jax.random.PRNGKey(2))
            name = "single" if mesh is None else "sharded"
            out[f"es_{fitness_name}_fitness_{name}"] = np.asarray(fit).tolist()
            if mesh is not None:
                out[f"es_{fitness_name}_fitness_devices"] = len({s.device for s in fit.addressable_shards})
    return out


def main():
    assert jax.device_count() == 8, jax.devices()
    report = {"devices": jax.device_count()}
    config = ppo.PPOConfig(num_envs=8, num_steps=32, total_timesteps=8 * 32 * 6, eval_episodes=2)
    trainer = ppo.make_train(config)
    hparams = ppo.PPOHParams()

    single, m_single = run(trainer, hparams, 8, None)
    pop, m_pop = run(trainer, hparams, 8, "pop")
    envs, m_envs = run(trainer, hparams, 8, "envs")
    report["ppo_pop_max_diff"] = max_diff(m_single, m_pop)
    report["ppo_envs_max_diff"] = max_diff(m_single, m_envs)
    report["ppo_eval_equal"] = bool(np.allclose(single.final_eval["return"], pop.final_eval["return"]))

    sac_config = sac.SACConfig(num_envs=8, total_timesteps=8 * 40, learning_starts=8 * 20, batch_size=32,
                               hidden_sizes=(32, 32), eval_episodes=2)
    sac_trainer = sac.make_train(sac_config)
    sac_keys = ("q_loss", "actor_loss", "alpha", "episode_return")
    _, s_single = run(sac_trainer, sac.SACHParams(), 8, None, sac_keys)
    _, s_pop = run(sac_trainer, sac.SACHParams(), 8, "pop", sac_keys)
    _, s_envs = run(sac_trainer, sac.SACHParams(), 8, "envs", sac_keys)
    report["sac_pop_max_diff"] = max_diff(s_single, s_pop)
    report["sac_envs_max_diff"] = max_diff(s_single, s_envs)
    report["sac_q_loss_scale"] = float(np.abs(s_single["q_loss"]).max())

    population, _ = run(trainer, hparams, 16, "pop")
    leaf = jax.tree.leaves(population.state.params)[0]
    report["population_shards"] = sorted({tuple(s.data.shape) for s in leaf.addressable_shards})
    report["population_devices"] = len({s.device for s in leaf.addressable_shards})
    report["population_leaf_shape"] = list(leaf.shape)

    report |= lm_data_parallel()
    report |= es_population_sharding()

    env_leaf = jax.tree.leaves(envs.state.env.obs)[0]
    report["envs_shard_shapes"] = sorted({tuple(s.data.shape) for s in env_leaf.addressable_shards})
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
