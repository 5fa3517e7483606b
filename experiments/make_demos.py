"""Expert demonstrations for imitation learning, in the dataset format.

    python -m experiments make-demos --env gymnax/CartPole-v1 --episodes 1 --out data/cartpole_demo
    python -m experiments make-demos --env gymnax/Pendulum-v1 --episodes 1 --out data/pendulum_demo

Trains an expert (``experiments.experts``: PPO for discrete actions, SAC for
continuous ones, with the env's preset; ``--agent``, ``--agent-steps``), or
loads one from the latest checkpoint of an earlier run
(``--expert-run runs/sac/...`` of ``python -m experiments {ppo,sac}``, seed
``--expert-seed``). Each demonstration is the first episode of its own env, run to its end
(termination or time limit) with the expert's deterministic action (the mean
for SAC, the most likely action for PPO; ``--stochastic`` samples instead).

Metadata: ``expert_return`` (the acting policy's mean return over 16 fresh
episodes, the 100 of a normalised score), ``random_return`` (the 0), the
demonstrations' own returns, the agent, its config and the command.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from experiments import experts
from experiments.make_dataset import command_line
from rljax.core import dataset as dataset_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import require

DESCRIPTION = "train (PPO/SAC) an expert and write N demonstration episodes as FILE.npz + FILE.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="gymnax/CartPole-v1", help="registered env name (envs.names())")
    parser.add_argument("--episodes", type=int, default=1, help="demonstration episodes to write")
    parser.add_argument("--out", required=True, metavar="FILE", help="writes FILE.npz and FILE.json")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for training and collection")
    parser.add_argument("--agent", default="auto", choices=experts.AGENTS,
                        help="expert agent: auto = PPO for discrete actions, SAC for continuous ones")
    parser.add_argument("--agent-steps", type=int, help="expert training env steps (default: the env's preset)")
    parser.add_argument("--expert-run", metavar="DIR", help="load the expert from a ppo/sac run directory")
    parser.add_argument("--expert-seed", type=int, default=0, help="which seed of --expert-run")
    parser.add_argument("--stochastic", action="store_true", help="sample the expert's actions (default: greedy)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE.npz / FILE.json")


def demonstrations(expert: experts.Expert, key: jax.Array, episodes: int, *, stochastic: bool = False,
                   metadata: dict | None = None) -> dataset_lib.Dataset:
    """The first episode of each of ``episodes`` envs, acted by ``expert`` (greedy unless ``stochastic``)."""
    require(episodes > 0, f"episodes: expected a positive number, got {episodes}")
    env, env_params = expert.env, expert.env_params
    policy = expert.sample if stochastic else expert.greedy
    steps = int(env_params.max_steps_in_episode)  # every episode ends within the time limit

    @jax.jit
    def run(key):
        reset_key, rollout_key = jax.random.split(key)
        carry = rollout_lib.reset(env, env_params, reset_key, episodes)
        return rollout_lib.rollout(env, env_params, policy, carry, rollout_key, steps)[1]

    traj = jax.device_get(run(key))
    data = dataset_lib.from_trajectory(traj, {}, drop_partial=True)
    # Column e's episodes are numbered after column e-1's: its first one follows all earlier columns'.
    first_of_each = np.concatenate([[0], np.cumsum(_episodes_per_column(traj))[:-1]])
    return dataset_lib.select_episodes(data, first_of_each, metadata or {})


def _episodes_per_column(traj) -> np.ndarray:
    done = np.asarray(traj.terminated) | np.asarray(traj.truncated)
    return done.sum(axis=0)


def make_demos(env: str, episodes: int, key: jax.Array, *, agent: str = "auto", agent_steps: int | None = None,
               expert_run: str | None = None, expert_seed: int = 0, stochastic: bool = False,
               metadata: dict | None = None) -> dataset_lib.Dataset:
    """Train (or load from ``expert_run``) the expert for ``env``; ``episodes`` demonstrations of it."""
    train_key, demo_key, expert_eval_key, random_eval_key = jax.random.split(key, 4)
    if expert_run:
        expert = experts.load(expert_run, expert_seed)
        run_env = expert.metadata[f"{expert.metadata['agent']}_config"]["env"]
        require(run_env == env, f"--expert-run {expert_run} trained on {run_env!r}, not on --env {env!r}")
    else:
        expert = experts.train(env, train_key, agent=agent, agent_steps=agent_steps)
    acting = expert.sample if stochastic else expert.greedy
    random = experts.random_policy(expert.env, expert.env_params)
    metadata = {
        "env": env, "policy": "expert", "stochastic": stochastic, **expert.metadata, **(metadata or {}),
        "expert_return": experts.mean_return(expert.env, expert.env_params, acting, expert_eval_key),
        "random_return": experts.mean_return(expert.env, expert.env_params, random, random_eval_key),
    }
    return demonstrations(expert, demo_key, episodes, stochastic=stochastic, metadata=metadata)


def main(args: argparse.Namespace) -> dict:
    dataset_lib.check_can_write(args.out, args.overwrite)  # refuse before training
    print(f"make-demos: {args.episodes} episode(s) of an expert on {args.env}")
    data = make_demos(
        args.env, args.episodes, jax.random.PRNGKey(args.seed), agent=args.agent, agent_steps=args.agent_steps,
        expert_run=args.expert_run, expert_seed=args.expert_seed, stochastic=args.stochastic, metadata={"seed": args.seed, "command": command_line(args, "make-demos")},
    )
    npz_path, json_path = dataset_lib.save(data, args.out, overwrite=args.overwrite)
    meta = data.metadata
    print(f"wrote {npz_path} + {json_path}: {data.num_episodes} episode(s), {data.num_transitions:,} transitions; "
          f"demonstration returns {np.round(data.episode_returns, 1).tolist()}, expert mean return "
          f"{np.round(meta['expert_return'], 1)} (random policy {np.round(meta['random_return'], 1)}) "
          f"over {experts.EVAL_EPISODES} episodes")
    return {k: v for k, v in meta.items() if k != "episode_returns"} | {"path": npz_path[: -len(".npz")]}
