"""ODICE's three value-update rules on a 2-D point mass, from dataset and from perturbed starts.

    python -m experiments odice            # 5 seeds x 3 rules x 20k gradient steps (4-8 min on one core)
    python -m experiments odice --quick    # smoke test (seconds)
    python -m experiments odice --gpu      # brax hopper, 1e6 medium transitions, 1e6 gradient steps (GPU)
    python -m experiments odice --gpu --env brax/halfcheetah

1. Data: 50,000 transitions (50 envs x 1,000 steps; unfinished tails kept, marked
   truncated) on ``toy/pointmass`` from a noisy suboptimal policy: half speed straight
   at the goal plus Gaussian noise, ``a = clip(0.5 (goal - p)/|goal - p| + N(0, 0.5^2 I), -1, 1)``.
   Saved with the run (``dataset.npz`` / ``dataset.json``).
2. ``rljax.agents.odice`` with ``update_rule`` = semi, true and orthogonal, every other
   setting equal (lambda 0.6, eta 1.0, gamma 0.99, lr 1e-3 for V and policy, tau 0.005,
   batch 256, twin 2x32 LayerNorm V, 2x32 Gaussian policy, 20,000 gradient steps); the
   seeds of a rule are vmapped in one program, and seed i has the same key under every rule.
3. Evaluation (mean action, 32 episodes per seed and start type): from the dataset's start
   distribution (the env's own: uniform on (-0.5, -0.5) +- 0.05), and from perturbed
   starts, defined before any run: the same starts moved 0.4 perpendicular to the
   start-goal line, to a random side (``start_perturbation=0.4``), i.e. about 8 x the start
   box's half-width away from where any dataset episode begins. The result records, as a
   check that these starts are out of distribution, the distance from each start to its
   nearest dataset state.

Claim, fixed before the first full run: from perturbed starts, the mean return over seeds
orders orthogonal >= semi >= true. Also reported: the fraction of batches (all seeds and
steps) whose forward and backward gradients conflict, cos(grad_F, grad_B) < 0.

Choices made during development, before any full run and before comparing rules: the
reward is the distance in units of the step (``-|p' - goal| / 0.1``), because at unit
scale every chi2 residual stayed in the linear part of f* (weights 0..1.25, the policy a
plain BC); the learning rates are 1e-3 instead of the code's 2e-4, because at 2e-4 the
values (about -100 at the start) were far from converged within the 20k-step budget
(seen on the semi rule alone); networks are 2x32 for the 10-minute single-core budget.

The brax scale-up (``--gpu``, not run yet: the one GPU session so far went to the benchmarks): a D4RL-style
"medium" dataset (``experiments.make_dataset``: 1e6 transitions of a partly trained SAC policy)
on ``brax/hopper`` (``--env`` for another brax env), rewards scaled by 1000 / (the dataset's
return range) as the official code does for MuJoCo (hopper, halfcheetah, walker2d), the official
code's settings (``ODICEHParams()`` defaults: lambda 0.6, eta 1.0, lr 2e-4, tau 0.005; twin 2x256
LayerNorm V, 2x1024 policy, batch 256) for 1e6 gradient steps; perturbed starts are the env's own reset noise scaled up
(``reset_noise_scale`` = ``--perturbation`` x the env's own, default 10x: hopper 0.005 -> 0.05).
Scores are normalised to the dataset's random (0) and medium (100) policies; the claim is checked
the same way.

Writes config.json, dataset.npz/.json, one sub-directory per rule (metrics.jsonl,
checkpoints/), result.json, returns.png (per rule and start type: seeds, mean, 95% CI),
curves.png (evaluation return and cos(grad_F, grad_B) over training).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.brax_envs import default_reset_noise_scale
from experiments import make_dataset as make_dataset_lib
from experiments.common import (GPU_ENV, add_run_arguments, apply_gpu_defaults, apply_overrides, offline_rl_rewards,
                                setup_run)
from experiments.make_dataset import command_line
from rljax.agents import odice
from rljax.core import dataset as dataset_lib
from rljax.core import loop as loop_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import to_dict
from rljax.core.evaluation import episode_returns
from rljax.core.logging import write_json
from rljax.core.stats import mean_ci95
from rljax.core.plotting import plt, save_figure, seed_band

NAME = "odice"
DESCRIPTION = "ODICE semi / true / orthogonal gradient updates on a 2-D point mass, dataset and perturbed starts"
ENV = "toy/pointmass"
GPU_DEFAULTS = {"env": GPU_ENV, "steps": 1_000_000, "steps_per_update": 1_000, "eval_every": 50,
                "transitions": 1_000_000}
# Perturbed starts: the point mass's shift (8x the start box's half-width); on brax, a multiple of
# the env's own reset noise scale (hopper: 0.005 -> 0.05; halfcheetah: 0.1 -> 1.0).
DEFAULT_PERTURBATION = {ENV: 0.4, "brax": 10.0}
CLAIM = "from perturbed starts, mean return: orthogonal >= semi >= true"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=ENV, help=f"{ENV} (the noisy policy's data) or a brax env (medium data)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per rule, vmapped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per seed")
    parser.add_argument("--steps-per-update", type=int, default=100, help="gradient steps per logged update")
    parser.add_argument("--eval-every", type=int, default=20, help="updates between evaluations")
    parser.add_argument("--transitions", type=int, default=50_000, help="dataset size (50 envs side by side)")
    parser.add_argument("--perturbation", type=float,
                        help=f"perturbed starts: on {ENV} the shift perpendicular to the start-goal line (default "
                             f"{DEFAULT_PERTURBATION[ENV]}); on brax the factor on the env's "
                             f"reset noise scale (default {DEFAULT_PERTURBATION['brax']})")
    parser.add_argument("--rules", default=",".join(odice.UPDATE_RULES), help="comma-separated subset")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="tiny data, networks and step count: a smoke test")
    scale.add_argument("--gpu", action="store_true", help=f"the brax scale-up ({GPU_ENV}, 1e6 medium transitions, "
                       "1e6 gradient steps, the official code's networks): a GPU run")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override an ODICEConfig or ODICEHParams field, e.g. --set lam=0.8")
    add_run_arguments(parser, NAME)


def perturbation_kwargs(env: str, perturbation: float) -> tuple[tuple[str, float], ...]:
    """The ``envs.make`` argument that perturbs the starts: the point mass's shift, or brax's reset
    noise scale times ``perturbation``."""
    if env == ENV:
        return (("start_perturbation", perturbation),)
    try:
        default = default_reset_noise_scale(envs.make(env)[0])
    except (AttributeError, ValueError) as e:
        raise SystemExit(f"--env {env}: perturbed starts need the point mass or a brax env with a reset noise "
                         f"scale ({e})") from None
    return (("reset_noise_scale", perturbation * default),)


def settings(args: argparse.Namespace) -> tuple[odice.ODICEConfig, odice.ODICEHParams]:
    if args.quick:
        sizes = dict(batch_size=64, value_hidden_sizes=(16, 16), policy_hidden_sizes=(16, 16), eval_episodes=4)
    elif args.env == ENV:
        sizes = dict(batch_size=256, value_hidden_sizes=(32, 32), policy_hidden_sizes=(32, 32), eval_episodes=32)
    else:  # the official code's MuJoCo networks (twin 2x256 LayerNorm V: the config's defaults) and batch
        sizes = dict(batch_size=256, policy_hidden_sizes=(1024, 1024), eval_episodes=10)
    config = odice.ODICEConfig(env=args.env, num_updates=args.steps // args.steps_per_update,
                               steps_per_update=args.steps_per_update,
                               ood_env_kwargs=perturbation_kwargs(args.env, args.perturbation), **sizes)
    if args.env == ENV:  # see "Choices made during development" above
        hparams = odice.ODICEHParams(lam=0.6, eta=1.0, gamma=0.99, value_lr=1e-3, policy_lr=1e-3, tau=0.005)
    else:
        hparams = odice.ODICEHParams()  # the official code's
    config, hparams = apply_overrides(args.set, config, hparams)
    odice.check_hparams(hparams)
    return config, hparams


# ---------------------------------------------------------------- data


def behaviour_policy(env, params):
    """Half speed straight at the goal plus N(0, 0.5^2) noise on each action coordinate, clipped to [-1, 1]."""

    def act(obs, key):
        return jnp.clip(0.5 * env.optimal_action(obs, params) + 0.5 * jax.random.normal(key, obs.shape), -1.0, 1.0)

    return act


def make_dataset(transitions: int, key: jax.Array, command: str = "") -> dataset_lib.Dataset:
    """About ``transitions`` steps of :func:`behaviour_policy` (50 envs side by side), ``command`` in the metadata."""
    env, params = envs.make(ENV)
    num_envs = 50 if transitions >= 50 else 1
    steps = -(-transitions // num_envs)
    act = behaviour_policy(env, params)
    carry = rollout_lib.reset(env, params, jax.random.fold_in(key, 0), num_envs)
    run = jax.jit(lambda c, k: rollout_lib.rollout(env, params, lambda o, kk: (act(o, kk), {}), c, k, steps))
    _, traj = run(carry, jax.random.fold_in(key, 1))
    metadata = {"env": ENV, "policy": "0.5 * optimal direction + N(0, 0.5^2), clipped to [-1, 1]",
                "num_envs": num_envs, "steps_per_env": steps, "command": command}
    return dataset_lib.from_trajectory(jax.device_get(traj), metadata, drop_partial=False)


def references(data: dataset_lib.Dataset, perturbation: float, key: jax.Array) -> dict:
    """Optimal and behaviour returns from both start types, and how far the starts lie from the data."""
    env, params = envs.make(ENV)
    out = {}
    obs = np.asarray(data.obs)
    for name, p in (("dataset", params), ("perturbed", params.replace(start_perturbation=perturbation))):
        starts, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.fold_in(key, 2), 256), p)
        starts = np.asarray(starts)
        nearest = np.sqrt(((starts[:, None, :] - obs[None, ::5, :]) ** 2).sum(-1)).min(axis=1)  # every 5th row
        behaviour = episode_returns(env, p, behaviour_policy(env, params), jax.random.fold_in(key, 3), 256)["return"]
        out[name] = {
            "optimal_return": float(env.optimal_return(starts, params).mean()),
            "behaviour_return": float(np.mean(behaviour)),
            "distance_to_nearest_dataset_state": {"mean": float(nearest.mean()), "max": float(nearest.max())},
        }
    return out


def load_data(args: argparse.Namespace, key: jax.Array) -> tuple[dataset_lib.Dataset, dataset_lib.Dataset, dict]:
    """The dataset as collected, the one the rules learn from (hopper, halfcheetah, walker2d: rewards
    scaled by the return range, as the official code), and the reference returns."""
    if args.env == ENV:
        data = make_dataset(args.transitions, key, command_line(args, NAME))
        return data, data, references(data, args.perturbation, key)
    extra = {"agent_steps": 2_000} if args.quick else {}
    data = make_dataset_lib.make("medium", args.env, key, steps=args.transitions,
                                 metadata={"command": command_line(args, NAME)}, **extra)
    scaled = offline_rl_rewards(data, args.env)
    # Only the unperturbed starts have reference returns (the medium policy is not kept).
    refs = {"dataset": {"behaviour_return": data.metadata["policy_return"],
                        "random_return": data.metadata["random_return"]}, "perturbed": {}}
    return data, scaled, refs


# ---------------------------------------------------------------- runs


def run_rule(rule: str, config, hparams, data, args, run_dir: str) -> dict:
    config = dataclasses.replace(config, update_rule=rule)
    trainer = odice.make_train(config, data)
    run_config = {"experiment": NAME, "update_rule": rule, "config": to_dict(config), "hparams": to_dict(hparams),
                  "seeds": args.seeds, "seed": args.seed}
    result = loop_lib.run(
        trainer, jax.random.PRNGKey(args.seed), hparams, num_seeds=args.seeds, run_dir=os.path.join(run_dir, rule),
        config_dict=run_config,
        loop=loop_lib.LoopConfig(chunk_updates=args.eval_every, eval_every_chunks=1, checkpoint_every_chunks=0,
                                 eval_episodes=config.eval_episodes, progress=not args.no_progress),
    )
    final = result.final_eval
    per_seed = {"dataset": final["return"].mean(axis=1), "perturbed": final["return_ood"].mean(axis=1)}
    records = result.records
    evals = [r for r in records if "eval_return/per_seed" in r]
    return {
        "return": {k: mean_ci95(v) for k, v in per_seed.items()},
        "return_per_seed": {k: v.tolist() for k, v in per_seed.items()},
        "episode_length": {"dataset": float(final["length"].mean()), "perturbed": float(final["length_ood"].mean())},
        # Each record's cos_negative is the fraction over its steps and seeds; all records have equal weight.
        "cos_negative_fraction": float(np.mean([r["cos_negative"] for r in records])),
        "cos_forward_backward_mean": float(np.mean([r["cos_forward_backward"] for r in records])),
        "curves": {
            "gradient_steps": [r["update"] * config.steps_per_update for r in records],
            "cos_forward_backward": [r["cos_forward_backward"] for r in records],
            "cos_forward_backward_min": [r["cos_forward_backward_min"] for r in records],
            "cos_forward_backward_max": [r["cos_forward_backward_max"] for r in records],
            "v_mean": [r["v_mean"] for r in records], "loss": [r["loss"] for r in records],
            "weight_zero_fraction": [r["weight_zero_fraction"] for r in records],
            "eval_gradient_steps": [r["update"] * config.steps_per_update for r in evals],
            "eval_return_per_seed": [r["eval_return/per_seed"] for r in evals],
        },
        "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds,
    }


def check_claim(rules: dict) -> dict:
    if not all(r in rules for r in odice.UPDATE_RULES):
        return {"statement": CLAIM, "holds": None, "note": "needs all three rules"}
    m = {r: rules[r]["return"]["perturbed"]["mean"] for r in odice.UPDATE_RULES}
    claim = {"statement": CLAIM, "perturbed_mean_return": m,
             "orthogonal_ge_semi": bool(m["orthogonal"] >= m["semi"]), "semi_ge_true": bool(m["semi"] >= m["true"]),
             "holds": bool(m["orthogonal"] >= m["semi"] >= m["true"])}
    if all("return_per_seed" in rules[r] for r in odice.UPDATE_RULES):
        # Seed i has the same training and evaluation keys under every rule: paired differences
        # (added after the first full run, as a reading aid; the claim is the ordering of means above).
        seeds = {r: np.asarray(rules[r]["return_per_seed"]["perturbed"]) for r in odice.UPDATE_RULES}
        claim["paired_difference"] = {
            "orthogonal_minus_semi": mean_ci95(seeds["orthogonal"] - seeds["semi"]),
            "semi_minus_true": mean_ci95(seeds["semi"] - seeds["true"]),
        }
    return claim


def _plot(summary: dict, run_dir: str) -> None:
    colors = {"semi": "tab:blue", "true": "tab:red", "orthogonal": "tab:green"}
    rules = summary["rules"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, start in zip(axes, ("dataset", "perturbed")):
        for i, (rule, r) in enumerate(rules.items()):
            seeds = r["return_per_seed"][start]
            ci = r["return"][start]
            ax.scatter(np.full(len(seeds), i) + np.linspace(-0.12, 0.12, len(seeds)), seeds, color=colors[rule],
                       alpha=0.6, s=18)
            ax.errorbar(i + 0.3, ci["mean"], yerr=[[ci["mean"] - ci["ci95_low"]], [ci["ci95_high"] - ci["mean"]]],
                        fmt="o", color="k", capsize=4)
        ref = summary["references"]["dataset" if summary["env"] != ENV else start]  # brax: unperturbed only
        for name, style in (("optimal_return", ":"), ("behaviour_return", "--"), ("random_return", "-.")):
            if name in ref:
                ax.axhline(ref[name], color="tab:gray", linestyle=style, linewidth=0.8, label=name.split("_")[0])
        ax.set_xticks(range(len(rules)), list(rules))
        ax.set_title(f"{start} starts", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return (seeds: dots; mean and 95% CI: black)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"ODICE update rules on {summary['env']}, {summary['seeds']} seeds", fontsize=10)
    save_figure(fig, os.path.join(run_dir, "returns.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for rule, r in rules.items():
        c = r["curves"]
        seed_band(axes[0], c["eval_gradient_steps"], np.array(c["eval_return_per_seed"]).T, rule, colors[rule])
        axes[1].plot(c["gradient_steps"], c["cos_forward_backward"], color=colors[rule], label=rule)
        axes[1].fill_between(c["gradient_steps"], c["cos_forward_backward_min"], c["cos_forward_backward_max"],
                             color=colors[rule], alpha=0.1)
    axes[0].set_ylabel("return, dataset starts")
    axes[0].set_title("evaluation (line: mean; band: seed min-max)", fontsize=9)
    axes[1].set_ylabel("cos(grad_F, grad_B)")
    axes[1].set_title("per batch (line: mean; band: min-max)", fontsize=9)
    axes[1].axhline(0, color="k", linewidth=0.8)
    for ax in axes:
        ax.set_xlabel("gradient steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, os.path.join(run_dir, "curves.png"))


def resolve_defaults(args: argparse.Namespace) -> None:
    """``--gpu``'s settings for flags left at their defaults, and the env's default perturbation."""
    apply_gpu_defaults(args, add_arguments, GPU_DEFAULTS)
    if args.perturbation is None:
        args.perturbation = DEFAULT_PERTURBATION[ENV if args.env == ENV else "brax"]


def main(args: argparse.Namespace) -> dict:
    resolve_defaults(args)
    if args.quick:
        if args.steps == 20_000:
            args.steps, args.steps_per_update, args.eval_every = 200, 50, 2
        if args.transitions == 50_000:
            args.transitions = 5_000
        if args.seeds == 5:
            args.seeds = 2
    rules = [r.strip() for r in args.rules.split(",")]
    unknown = sorted(set(rules) - set(odice.UPDATE_RULES))
    if unknown:
        raise SystemExit(f"--rules: unknown {unknown}; expected some of {odice.UPDATE_RULES}")
    if args.steps % args.steps_per_update or (args.steps // args.steps_per_update) % args.eval_every:
        raise SystemExit(f"--steps ({args.steps}) must be a multiple of --steps-per-update ({args.steps_per_update}) "
                         f"x --eval-every ({args.eval_every})")
    config, hparams = settings(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    key = jax.random.PRNGKey(args.seed + 1000)
    data, train_data, refs = load_data(args, key)
    dataset_lib.save(data, os.path.join(run_dir, "dataset"))
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": NAME, "config": to_dict(config), "hparams": to_dict(hparams), "seeds": args.seeds,
        "seed": args.seed, "rules": rules, "perturbation": args.perturbation, "claim": CLAIM,
        "command": command_line(args, NAME),
    })
    print(f"ODICE on {args.env}: {data.num_transitions} transitions, {data.num_episodes} episodes "
          f"(behaviour return {refs['dataset']['behaviour_return']:.1f}); "
          f"{args.seeds} seeds x {config.gradient_steps} gradient steps per rule -> {run_dir}")

    summary = {"experiment": NAME, "env": args.env, "seeds": args.seeds,
               "gradient_steps_per_seed": config.gradient_steps,
               "dataset": {"transitions": data.num_transitions, "episodes": data.num_episodes,
                           "mean_return": float(data.episode_returns.mean()),
                           "reward_scale": train_data.metadata.get("reward_scale", 1.0)},
               "perturbation": args.perturbation, "ood_env_kwargs": dict(config.ood_env_kwargs),
               "references": refs, "hparams": to_dict(hparams), "rules": {}}
    for rule in rules:
        print(f"-- {rule}")
        summary["rules"][rule] = r = run_rule(rule, config, hparams, train_data, args, run_dir)
        if args.env != ENV:  # 0: random, 100: the medium policy that collected the data
            r["normalized_score"] = {
                start: mean_ci95(dataset_lib.normalized_score(seeds, data.metadata["random_return"],
                                                              data.metadata["policy_return"]))
                for start, seeds in r["return_per_seed"].items()}
        print(f"   return dataset starts {r['return']['dataset']['mean']:.2f}, perturbed starts "
              f"{r['return']['perturbed']['mean']:.2f}; cos(grad_F, grad_B) < 0 on "
              f"{100 * r['cos_negative_fraction']:.1f}% of batches")
    summary["claim"] = check_claim(summary["rules"])
    summary["wall_seconds"] = time.perf_counter() - start
    summary["finished"] = True
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(summary, run_dir)
    print(f"claim ({CLAIM}): {summary['claim']['holds']}")
    print(f"wrote {run_dir} ({summary['wall_seconds']:.0f} s)")
    return summary
