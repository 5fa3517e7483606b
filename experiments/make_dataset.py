"""Offline RL and imitation datasets from random or trained (PPO or SAC) policies.

    python -m experiments make-dataset --env gymnax/CartPole-v1 --policy expert --steps 100000 --out data/cartpole_expert
    python -m experiments make-dataset --env gymnax/Pendulum-v1 --policy medium --steps 100000 --out data/pendulum_medium

Policies (D4RL's names; "medium" and "expert" are defined by training budget, not by a target score):

    random   uniform random actions from the env's action space
    expert   the agent (--agent: PPO for discrete actions, SAC for continuous ones by default) with
             the env's preset, trained for --agent-steps env steps (default: the preset's budget);
             actions are sampled from its stochastic policy
    medium   the same run stopped after --medium-fraction (default 0.25) of its updates, i.e. an
             early checkpoint of the expert run with the same seed and budget
    mixed    half the transitions from random, half from medium (random episodes first)

Collects ceil(--steps / --num-envs) steps in each of --num-envs envs and keeps only complete
episodes, so a few fewer than --steps transitions are stored (the count is printed). Writes
FILE.npz + FILE.json (see ``rljax.core.dataset``). The metadata records ``random_return``
(the random policy's mean return over 16 episodes) and, for trained policies,
``policy_return`` (the collecting policy's, sampling actions, over 16 episodes; for mixed,
medium's), so ``dataset.normalized_score`` can be computed later.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

import jax
import numpy as np

import envs
from experiments import experts
from rljax.core import dataset as dataset_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import require

DESCRIPTION = "write an offline RL dataset (random, medium, expert or mixed policy) as FILE.npz + FILE.json"

POLICIES = ("random", "medium", "expert", "mixed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="gymnax/CartPole-v1", help="registered env name (envs.names())")
    parser.add_argument("--policy", required=True, choices=POLICIES, help="which policy collects the data")
    parser.add_argument("--steps", type=int, default=100_000, help="transitions to collect (all envs together)")
    parser.add_argument("--out", required=True, metavar="FILE", help="writes FILE.npz and FILE.json")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for training and collection")
    parser.add_argument("--agent", default="auto", choices=experts.AGENTS,
                        help="trained agent: auto = PPO for discrete actions, SAC for continuous ones")
    parser.add_argument("--agent-steps", type=int, help="agent env steps for expert (default: the env's preset)")
    parser.add_argument("--medium-fraction", type=float, default=0.25, help="share of the agent's updates for medium")
    parser.add_argument("--num-envs", type=int, default=8, help="envs collecting side by side")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE.npz / FILE.json")


# ---------------------------------------------------------------- collection


def collect(env, env_params, policy, key, steps: int, num_envs: int, metadata: dict) -> dataset_lib.Dataset:
    """About ``steps`` transitions of ``policy``, complete episodes only."""
    num_steps = -(-steps // num_envs)  # ceil: at least `steps` collected

    @jax.jit
    def run(key):
        reset_key, rollout_key = jax.random.split(key)
        carry = rollout_lib.reset(env, env_params, reset_key, num_envs)
        return rollout_lib.rollout(env, env_params, policy, carry, rollout_key, num_steps)[1]

    metadata = {**metadata, "num_envs": num_envs, "env_steps_collected": num_steps * num_envs}
    return dataset_lib.from_trajectory(run(key), metadata, drop_partial=True)


def make(
    policy: str,
    env: str,
    key: jax.Array,
    *,
    steps: int,
    num_envs: int = 8,
    medium_fraction: float = 0.25,
    agent: str = "auto",
    agent_steps: int | None = None,
    config: Any = None,
    hparams: Any = None,
    metadata: dict | None = None,
) -> dataset_lib.Dataset:
    """A dataset of about ``steps`` transitions of ``policy`` in ``env``.

    "medium", "expert" and "mixed" train an agent with ``experiments.experts.train``
    (``agent``, ``agent_steps``, or an explicit run ``config``/``hparams``).
    """
    require(policy in POLICIES, f"policy: expected one of {POLICIES}, got {policy!r}")
    require(steps > 0 and num_envs > 0, f"steps and num_envs: expected positive numbers, got {steps} and {num_envs}")
    require(0 < medium_fraction <= 1, f"medium_fraction: expected a number in (0, 1], got {medium_fraction}")
    train_key, random_key, trained_key, random_eval_key, trained_eval_key = jax.random.split(key, 5)
    metadata = {"env": env, "policy": policy, **(metadata or {})}

    raw_env, raw_params = envs.make(env) if config is None else envs.make(env, **dict(config.env_kwargs))
    random = experts.random_policy(raw_env, raw_params)
    metadata["random_return"] = experts.mean_return(raw_env, raw_params, random, random_eval_key)
    if policy == "random":
        return collect(raw_env, raw_params, random, random_key, steps, num_envs, metadata)

    fraction = 1.0 if policy == "expert" else medium_fraction
    expert = experts.train(env, train_key, agent=agent, agent_steps=agent_steps, fraction=fraction,
                           config=config, hparams=hparams)
    if policy != "expert":
        metadata["medium_fraction"] = medium_fraction
    metadata |= expert.metadata
    metadata["policy_return"] = experts.mean_return(expert.env, expert.env_params, expert.sample, trained_eval_key)
    if policy != "mixed":
        return collect(expert.env, expert.env_params, expert.sample, trained_key, steps, num_envs, metadata)

    parts = [
        collect(raw_env, raw_params, random, random_key, steps // 2, num_envs, {"policy": "random"}),
        collect(expert.env, expert.env_params, expert.sample, trained_key, steps - steps // 2, num_envs,
                {"policy": "medium"}),
    ]
    summary = ("policy", "num_transitions", "num_episodes", "mean_return", "env_steps_collected")
    metadata["parts"] = [{k: part.metadata[k] for k in summary} for part in parts]
    metadata["num_envs"] = num_envs
    metadata["env_steps_collected"] = sum(part.metadata["env_steps_collected"] for part in parts)
    return dataset_lib.concatenate(parts, metadata)


# ---------------------------------------------------------------- CLI


def command_line(args: argparse.Namespace, name: str) -> str:
    """The command ``python -m experiments NAME``, with every option it resolved to, that reproduces a file."""
    words = ["python", "-m", "experiments", name]
    for name, value in vars(args).items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(words)


def _fmt(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, float) else str(np.round(x, 1).tolist())


def main(args: argparse.Namespace) -> dict:
    # Refuse before training, which may take long, rather than after it.
    dataset_lib.check_can_write(args.out, args.overwrite)
    print(f"make-dataset: {args.policy} policy on {args.env}, {args.steps:,} steps in {args.num_envs} envs")

    data = make(
        args.policy, args.env, jax.random.PRNGKey(args.seed), steps=args.steps, num_envs=args.num_envs,
        medium_fraction=args.medium_fraction, agent=args.agent, agent_steps=args.agent_steps,
        metadata={"seed": args.seed, "command": command_line(args, "make-dataset")},
    )
    npz_path, json_path = dataset_lib.save(data, args.out, overwrite=args.overwrite)

    meta = data.metadata
    dropped = meta["env_steps_collected"] - data.num_transitions
    returns = f"mean return {_fmt(meta['mean_return'])} (random policy {_fmt(meta['random_return'])}"
    returns += f", this policy {_fmt(meta['policy_return'])})" if "policy_return" in meta else ")"
    print(f"wrote {npz_path} + {json_path}: {data.num_transitions:,} transitions in {data.num_episodes:,} episodes "
          f"({dropped:,} of {meta['env_steps_collected']:,} collected dropped with unfinished episodes); {returns}")
    return {k: v for k, v in meta.items() if k != "episode_returns"} | {"path": npz_path[: -len(".npz")]}
