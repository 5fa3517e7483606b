"""PPO training throughput beside brax's own PPO trainer, same env and settings, one process.

    python -m experiments.benchmarks.vs_brax --out runs/bench/vs_brax.json     # or: make bench-brax
    python -m experiments.benchmarks.vs_brax --quick                          # smoke test

``brax.training.agents.ppo.train`` is the trainer researchers compare brax envs with. For each case both
train one seed of PPO on the same brax env (``positional`` backend, 1000-step episodes) for the same env
steps, with this library's continuous preset at 256 envs (``experiments.benchmarks.throughput``):
256 envs x 16 steps per update, 4 epochs x 8 minibatches of 512 transitions, 256x256 tanh actor and critic,
a Gaussian with a learned state-independent std, observation normalisation, lr 3e-4, clip 0.2, entropy 0,
value coefficient 0.5, gradient norm 0.5, gamma 0.99, GAE lambda 0.95.
brax's batch is laid out to match: ``batch_size`` 32 trajectories x ``num_minibatches`` 8 = 256 envs, so
one 16-step unroll per env per update.

Timing. rljax: ahead-of-time compile, then the best of ``--repeats`` whole runs. brax: its trainer times
each training epoch itself (``training/sps``); with ``num_evals=3`` it runs two epochs of half the steps
each, the first of which includes compilation, so the run rate is the second epoch's and the compile
time the first epoch's excess over it (best of ``--repeats`` calls; brax compiles again on every call).

What still differs, by design of each library: at a time-out rljax bootstraps from the value of the final
observation (one more value forward per step), brax masks the step out of GAE (its ``bootstrap_on_timeout``
reads an info key, ``time_out``, that brax's own ``EpisodeWrapper`` does not set: a KeyError in 0.14.2, so
it keeps the default); rljax scales rewards by the running std of the discounted
return (PureJaxRL's continuous PPO), brax by a constant (``reward_scaling`` 1); rljax clips the value loss
(PureJaxRL), brax does not; initialisations differ (orthogonal vs LeCun uniform). Each library's own
evaluation reports the final return (rljax: greedy actions, ``eval_episodes`` episodes; brax: its
evaluator, 128 envs, greedy), a check that both trained, not a comparison of returns.
"""

from __future__ import annotations

import dataclasses
import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from brax import envs as brax_envs
from brax.training.agents.ppo import networks as brax_ppo_networks
from brax.training.agents.ppo import train as brax_ppo
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.benchmarks.throughput import case_arguments, timed_output, write_report
from rljax.agents import ppo


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    config: ppo.PPOConfig
    hparams: ppo.PPOHParams


def cases(quick: bool) -> list[Case]:
    preset, hparams = ppo.PRESETS["brax/inverted_pendulum"]
    batch = 256 * 16
    total = batch * (2 if quick else 50)  # 204,800 steps: 50 updates, two brax epochs of 25

    def case(env: str) -> Case:
        config = dataclasses.replace(preset, env=env, num_envs=256, num_steps=16, num_minibatches=8,
                                     total_timesteps=total, eval_episodes=4 if quick else 16)
        return Case(f"PPO {env}, 256 envs", config, hparams)

    return [case("brax/inverted_pendulum"), case("brax/halfcheetah")]


def run_rljax(case: Case, repeats: int) -> dict:
    trainer = ppo.make_train(case.config)

    def train(key):
        return trainer(key, case.hparams)[0]

    compile_s, run_s, state = timed_output(train, jax.random.PRNGKey(0), repeats=repeats)
    returns = jax.jit(trainer.evaluate)(state, jax.random.PRNGKey(1))["return"]
    steps = trainer.total_env_steps
    return {"env_steps": steps, "compile_seconds": compile_s, "run_seconds": run_s,
            "env_steps_per_second": steps / run_s, "final_return": float(np.mean(returns))}


def brax_trainer_kwargs(case: Case, quick: bool) -> dict:
    """brax's ``ppo.train`` arguments for the same PPO as ``case`` (the batch laid out as rljax's)."""
    config, hp = case.config, case.hparams
    trajectories_per_minibatch = config.num_envs // config.num_minibatches
    network_factory = functools.partial(
        brax_ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=config.hidden_sizes,
        value_hidden_layer_sizes=config.hidden_sizes, activation=getattr(nn, config.activation),
        distribution_type="normal", noise_std_type="log",
    )
    return dict(
        num_timesteps=config.total_timesteps, num_envs=config.num_envs, episode_length=1000,
        unroll_length=config.num_steps, batch_size=trajectories_per_minibatch,
        num_minibatches=config.num_minibatches, num_updates_per_batch=config.update_epochs,
        learning_rate=hp.learning_rate, entropy_cost=hp.ent_coef, discounting=hp.gamma,
        gae_lambda=hp.gae_lambda, clipping_epsilon=hp.clip_eps, max_grad_norm=hp.max_grad_norm,
        vf_loss_coefficient=hp.vf_coef, normalize_observations=config.normalize_obs, normalize_advantage=True,
        network_factory=network_factory, num_evals=3, deterministic_eval=True,
        num_eval_envs=4 if quick else 128, seed=0,
    )


def _device_put_replicated(tree, devices):
    """``jax.device_put_replicated`` as it was (jax < 0.10): a copy of every leaf on each device, stacked."""
    sharding = NamedSharding(Mesh(np.array(devices), ("i",)), PartitionSpec("i"))
    return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * len(devices)), sharding), tree)


def run_brax(case: Case, repeats: int, quick: bool) -> dict:
    env = brax_envs.get_environment(case.config.env.removeprefix("brax/"), backend="positional")
    kwargs = brax_trainer_kwargs(case, quick)
    epoch_steps = kwargs["num_timesteps"] // 2
    best = None
    for _ in range(repeats):
        reports = []
        # brax 0.14.2 (the newest) still calls jax.device_put_replicated, removed in jax 0.10: supply it.
        with mock.patch.object(jax, "device_put_replicated", _device_put_replicated, create=True):
            brax_ppo.train(environment=env, progress_fn=lambda step, metrics: reports.append(metrics), **kwargs)
        first, last = reports[-2], reports[-1]  # the two training epochs (reports[0] is the initial eval)
        run_rate = float(last["training/sps"])
        first_epoch_s = float(first["training/walltime"])
        result = {"env_steps": kwargs["num_timesteps"], "compile_seconds": first_epoch_s - epoch_steps / run_rate,
                  "run_seconds": kwargs["num_timesteps"] / run_rate, "env_steps_per_second": run_rate,
                  "final_return": float(last["eval/episode_reward"])}
        if best is None or run_rate > best["env_steps_per_second"]:
            best = result
    return best


def main(argv=None) -> dict:
    args = case_arguments(argv, __doc__.splitlines()[0], "runs/bench/vs_brax.json")
    results = []
    for case in cases(args.quick):
        if args.only and args.only not in case.name:
            continue
        print(f"{case.name}:", flush=True)
        ours, theirs = run_rljax(case, args.repeats), run_brax(case, args.repeats, args.quick)
        for name, r in (("rljax", ours), ("brax", theirs)):
            print(f"  {name:6s} {r['env_steps_per_second']:>10,.0f} steps/s (compile {r['compile_seconds']:.1f} s, "
                  f"run {r['run_seconds']:.2f} s), final return {r['final_return']:.1f}", flush=True)
        ratio = ours["env_steps_per_second"] / theirs["env_steps_per_second"]
        print(f"  rljax / brax = {ratio:.2f}x", flush=True)
        results.append({"case": case.name, "env": case.config.env, "rljax": ours, "brax": theirs,
                        "rljax_over_brax": ratio})
    return write_report("vs_brax", args.quick, results, args.out)


if __name__ == "__main__":
    main()
