"""TA-LPO vs LPO vs PPO: learned drifts meta-trained by OpenES, tested at unseen horizons (Jackson et al., ICLR 2024).

    python -m experiments talpo-cartpole            # CPU, one core, about 7 minutes
    python -m experiments talpo-cartpole --quick    # smoke test
    python -m experiments talpo-minatar             # GPU scale: Breakout-MinAtar, population 64
    python -m experiments talpo-brax                # GPU scale: brax ant

One script, three presets (``--set`` / flags override any field). Steps:

1. Meta-train LPO's drift (8 features) and TA-LPO's (16: the same times n / N) with
   OpenES (``rljax.core.es``): ``population`` members, antithetic pairs, centred-rank
   fitness, every member's fitness the mean final return of ``seeds_per_member``
   full PPO-with-drift lifetimes of N updates (common random numbers: all members
   see the same task keys in a generation). Both start from the same random drift.
2. Meta-evaluate: PPO (clip 0.2), LPO and TA-LPO with the evolved drifts, each for
   N/2, N and 2N updates (N/2 and 2N unseen in meta-training), ``eval_seeds`` fresh
   seeds each; and on an unseen environment (``unseen_env``) at N.
3. Drift maps: f(r, A) on r in [0.5, 1.5] x A in [-2, 2] for LPO and for TA-LPO at
   n / N = 0 and n / N = 1.

Claims (CartPole preset), fixed before the first full run:

* ``talpo_ge_lpo_every_horizon``: TA-LPO's mean return >= LPO's at N/2, N and 2N;
* ``drift_changes_over_lifetime``: TA-LPO's drift at n/N = 0 and at n/N = 1 differ by
  mean |f_0 - f_1| / mean((f_0 + f_1) / 2) >= 0.1 over the grid;
* ``lpo_matches_ppo`` / ``talpo_matches_ppo``: at N, mean return >= PPO's, or not
  significantly below it (the 95% interval of the difference of means, Welch,
  reaches 0). Which of "beats" or "matches" held is reported.

Inner PPO: PureJaxRL's CartPole settings except 32 envs x 16 steps, N = 40 updates
(20,480 env steps) and learning rate 1e-3 (at 2.5e-4 the ratio barely leaves 1 in
40 updates, so no drift matters; at 1e-3 PPO's clip beats no trust region).

Writes config.json, result.json, meta_{lpo,talpo}/ (metrics.jsonl, orbax
checkpoints; ``--resume DIR`` continues an interrupted meta-training),
drift_{lpo,talpo}.safetensors, horizons.png, meta_training.png, drift.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import add_run_arguments, apply_overrides, seed_returns, setup_run
from rljax.agents import lpo, ppo
from rljax.core import es
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import difference_ci95, mean_ci95

METHODS = ("ppo", "lpo", "talpo")
COLORS = {"ppo": "tab:gray", "lpo": "tab:blue", "talpo": "tab:red"}
DRIFT_GRID = {"ratio": (0.5, 1.5), "advantage": (-2.0, 2.0), "points": 41}


@dataclasses.dataclass(frozen=True)
class Preset:
    ppo: ppo.PPOConfig
    hparams: ppo.PPOHParams
    es: es.ESConfig
    unseen_env: str | None
    eval_seeds: int = 16


PRESETS = {
    "cartpole": Preset(
        ppo=ppo.PPOConfig(env="gymnax/CartPole-v1", num_envs=32, num_steps=16, total_timesteps=32 * 16 * 40,
                          update_epochs=4, num_minibatches=4, eval_episodes=8),
        hparams=ppo.PPOHParams(learning_rate=1e-3),
        es=es.ESConfig(population_size=32, generations=40, sigma=0.1, learning_rate=0.02, seeds_per_member=2),
        unseen_env="gymnax/Acrobot-v1",
    ),
    # GPU scale (PureJaxRL's MinAtar PPO batch; 1e6 steps per lifetime).
    "minatar": Preset(
        ppo=ppo.PPOConfig(env="gymnax/Breakout-MinAtar", num_envs=64, num_steps=128, total_timesteps=64 * 128 * 122,
                          update_epochs=4, num_minibatches=8, hidden_sizes=(256, 256), eval_episodes=16),
        hparams=ppo.PPOHParams(learning_rate=5e-3),
        es=es.ESConfig(population_size=64, generations=300, sigma=0.1, learning_rate=0.02, seeds_per_member=1),
        unseen_env="gymnax/SpaceInvaders-MinAtar",
    ),
    "brax": Preset(
        ppo=dataclasses.replace(ppo.PRESETS["brax/inverted_pendulum"][0], env="brax/ant", num_envs=256,
                                num_steps=32, total_timesteps=256 * 32 * 120),
        hparams=ppo.PRESETS["brax/inverted_pendulum"][1],
        es=es.ESConfig(population_size=64, generations=200, sigma=0.1, learning_rate=0.02, seeds_per_member=1),
        unseen_env="brax/halfcheetah",
    ),
}


def add_arguments(parser: argparse.ArgumentParser, preset: str = "cartpole") -> None:
    add_run_arguments(parser, f"talpo-{preset}")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=preset)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", type=int, help="ES population (even)")
    parser.add_argument("--generations", type=int)
    parser.add_argument("--eval-seeds", type=int)
    parser.add_argument("--shard", action="store_true", help="split the population over all devices")
    parser.add_argument("--quick", action="store_true", help="a tiny run: a smoke test")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a PPOConfig / PPOHParams / ESConfig field")


def settings(args) -> tuple[lpo.LPOConfig, ppo.PPOHParams, es.ESConfig, int, str | None]:
    preset = PRESETS[args.preset]
    ppo_config, hparams, es_config = preset.ppo, preset.hparams, preset.es
    eval_seeds = args.eval_seeds or preset.eval_seeds
    changes = {"progress": not args.no_progress, "shard": args.shard}
    if args.population:
        changes["population_size"] = args.population
    if args.generations:
        changes["generations"] = args.generations
    if args.quick:
        ppo_config = dataclasses.replace(ppo_config, num_envs=4, num_steps=8, num_minibatches=2,
                                         total_timesteps=4 * 8 * 4, eval_episodes=2)
        changes.update(population_size=4, generations=2, seeds_per_member=1)
        eval_seeds = 2
    ppo_config, hparams, es_config = apply_overrides(args.set, ppo_config, hparams, es_config, **changes)
    return lpo.LPOConfig(ppo=ppo_config), hparams, es_config, eval_seeds, None if args.quick else preset.unseen_env


def meta_train(config: lpo.LPOConfig, hparams, es_config: es.ESConfig, key, run_dir: str, resume: bool):
    """Evolve the drift of ``config`` (LPO or TA-LPO); returns the ES mean and per-generation records."""
    name = "talpo" if config.temporal else "lpo"
    fitness = lpo.lifetime_fitness(config)
    init = lpo.init_drift(jax.random.PRNGKey(0), config)
    result = es.meta_train(
        lambda drift, k: fitness(drift, k, lpo.LPOHParams(**to_dict(hparams))), init, es_config, key,
        run_dir=os.path.join(run_dir, f"meta_{name}"), resume=resume, run_config=to_dict(config),
        description=f"meta-train {name}",
    )
    es.save_meta_params(os.path.join(run_dir, f"drift_{name}.safetensors"), result.mean)
    return result


def final_returns(config: lpo.LPOConfig, hparams, drift_params, keys) -> tuple[np.ndarray, np.ndarray]:
    """``(final return [seeds], training curve [seeds, updates])``; ``drift_params=None`` is plain PPO."""
    if drift_params is None:
        return seed_returns(ppo.make_train(config.ppo), hparams, keys)
    return seed_returns(lpo.make_train(config), lpo.LPOHParams(**to_dict(hparams), drift=drift_params), keys)


def drift_maps(lpo_config: lpo.LPOConfig, talpo_config: lpo.LPOConfig, drifts: dict) -> dict[str, np.ndarray]:
    n = DRIFT_GRID["points"]
    ratio, advantage = jnp.meshgrid(jnp.linspace(*DRIFT_GRID["ratio"], n), jnp.linspace(*DRIFT_GRID["advantage"], n))
    return {
        "lpo": np.asarray(lpo.drift(lpo_config, drifts["lpo"], ratio, advantage)),
        "talpo_start": np.asarray(lpo.drift(talpo_config, drifts["talpo"], ratio, advantage, 0.0)),
        "talpo_end": np.asarray(lpo.drift(talpo_config, drifts["talpo"], ratio, advantage, 1.0)),
    }


def relative_change(a: np.ndarray, b: np.ndarray) -> float:
    """mean |a - b| / mean((a + b) / 2) (0 when both are 0)."""
    scale = float(np.mean((a + b) / 2))
    return float(np.mean(np.abs(a - b)) / scale) if scale > 0 else 0.0


def main(args) -> dict:
    run_dir = setup_run(args, f"talpo-{args.preset}")
    lpo_config, hparams, es_config, eval_seeds, unseen_env = settings(args)
    talpo_config = dataclasses.replace(lpo_config, temporal=True)
    N = lpo_config.ppo.num_updates
    horizons = sorted({max(1, N // 2), N, 2 * N})
    write_json(os.path.join(run_dir, "config.json"), {
        "preset": args.preset, "lpo": to_dict(lpo_config), "hparams": to_dict(hparams), "es": to_dict(es_config),
        "eval_seeds": eval_seeds, "horizons": horizons, "unseen_env": unseen_env, "seed": args.seed,
    })
    start = time.time()
    key = jax.random.PRNGKey(args.seed)
    meta_key, eval_key = jax.random.split(key)

    meta = {name: meta_train(cfg, hparams, es_config, meta_key, run_dir, bool(args.resume))
            for name, cfg in (("lpo", lpo_config), ("talpo", talpo_config))}
    drifts = {name: m.mean for name, m in meta.items()}

    # Meta-evaluation on fresh seeds (never used in meta-training: a separate key).
    keys = jax.random.split(eval_key, eval_seeds)
    configs = {"ppo": lpo_config, "lpo": lpo_config, "talpo": talpo_config}
    returns: dict[str, dict[int, np.ndarray]] = {m: {} for m in METHODS}
    curves: dict[str, np.ndarray] = {}
    for method in METHODS:
        for horizon in horizons:
            final, curve = final_returns(configs[method].with_horizon(horizon), hparams, drifts.get(method), keys)
            returns[method][horizon] = final
            if horizon == N:
                curves[method] = curve
    unseen = {}
    if unseen_env:
        for method in METHODS:
            cfg = dataclasses.replace(configs[method], ppo=dataclasses.replace(configs[method].ppo, env=unseen_env))
            unseen[method] = final_returns(cfg, hparams, drifts.get(method), keys)[0]

    maps = drift_maps(lpo_config, talpo_config, drifts)
    change = relative_change(maps["talpo_start"], maps["talpo_end"])
    summary = {m: {str(h): mean_ci95(returns[m][h]) for h in horizons} for m in METHODS}
    vs_ppo = {m: difference_ci95(returns[m][N], returns["ppo"][N]) for m in ("lpo", "talpo")}
    claims = {
        "talpo_ge_lpo_every_horizon": {
            "holds": all(summary["talpo"][str(h)]["mean"] >= summary["lpo"][str(h)]["mean"] for h in horizons),
            "per_horizon": {str(h): summary["talpo"][str(h)]["mean"] - summary["lpo"][str(h)]["mean"]
                            for h in horizons},
        },
        "drift_changes_over_lifetime": {"holds": change >= 0.1, "relative_change": change,
                                        "mean_drift_start": float(maps["talpo_start"].mean()),
                                        "mean_drift_end": float(maps["talpo_end"].mean())},
    }
    for m in ("lpo", "talpo"):
        d = vs_ppo[m]
        claims[f"{m}_matches_ppo"] = {"holds": d["diff"] >= 0 or d["ci95_high"] >= 0,
                                      "beats": d["diff"] >= 0, **d}
    result = {
        "horizons": horizons, "meta_horizon": N, "returns": summary,
        "returns_per_seed": {m: {str(h): returns[m][h].tolist() for h in horizons} for m in METHODS},
        "unseen_env": {"env": unseen_env, **{m: mean_ci95(v) for m, v in unseen.items()}} if unseen else None,
        "meta_training": {name: {"final_fitness_mean": m.records[-1]["fitness_mean"] if m.records else None,
                                 "compile_seconds": m.compile_seconds, "run_seconds": m.run_seconds,
                                 "generations_run": len(m.records)} for name, m in meta.items()},
        "claims": claims, "seconds": time.time() - start,
    }
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(run_dir, horizons, N, returns, curves, maps, {name: m.records for name, m in meta.items()})
    print(f"talpo-{args.preset}: " + "; ".join(
        f"N={h}: " + ", ".join(f"{m} {summary[m][str(h)]['mean']:.1f}" for m in METHODS) for h in horizons))
    print(f"drift change n/N 0 -> 1: {change:.3f}; claims: "
          + ", ".join(f"{k}={'holds' if v['holds'] else 'fails'}" for k, v in claims.items()))
    print(f"wrote {run_dir} in {result['seconds']:.0f} s")
    return result


def plot(run_dir: str, horizons, N, returns, curves, maps, meta_records) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, m in enumerate(METHODS):
        means = [returns[m][h].mean() for h in horizons]
        cis = [mean_ci95(returns[m][h]) for h in horizons]
        axes[0].errorbar(np.array(horizons) * (1 + 0.03 * (i - 1)), means,
                         yerr=[[c["mean"] - c["ci95_low"] for c in cis], [c["ci95_high"] - c["mean"] for c in cis]],
                         fmt="-o", color=COLORS[m], label=m.upper().replace("TALPO", "TA-LPO"), capsize=3)
        curve = curves[m]
        axes[1].plot(np.arange(1, curve.shape[1] + 1), curve.mean(axis=0), color=COLORS[m], label=m)
    axes[0].axvline(N, color="k", ls=":", lw=1)
    axes[0].set(xscale="log", xlabel="training horizon (updates)", ylabel="final return (mean, 95% CI)",
                title="unseen horizons (dotted: meta-training N)")
    axes[0].set_xticks(horizons, [str(h) for h in horizons])
    axes[1].set(xlabel="update", ylabel="training episode return", title=f"learning curves at N = {N}")
    axes[0].legend()
    save_figure(fig, os.path.join(run_dir, "horizons.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, records in meta_records.items():
        if records:
            gens = [r["generation"] for r in records]
            ax.plot(gens, [r["fitness_mean"] for r in records], color=COLORS[name], label=f"{name} population mean")
            ax.plot(gens, [r["fitness_max"] for r in records], ":", color=COLORS[name], label=f"{name} best member")
    ax.set(xlabel="ES generation", ylabel="fitness (final return)", title="meta-training")
    ax.legend()
    save_figure(fig, os.path.join(run_dir, "meta_training.png"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    extent = [*DRIFT_GRID["ratio"], *DRIFT_GRID["advantage"]]
    vmax = max(float(v.max()) for v in maps.values()) or 1.0
    for ax, (name, title) in zip(axes, [("lpo", "LPO"), ("talpo_start", "TA-LPO, n/N = 0"),
                                        ("talpo_end", "TA-LPO, n/N = 1")]):
        im = ax.imshow(maps[name], origin="lower", extent=extent, aspect="auto", vmin=0, vmax=vmax, cmap="viridis")
        ax.set(xlabel="ratio r", ylabel="advantage A", title=f"drift f: {title}")
    fig.colorbar(im, ax=axes, shrink=0.9)
    fig.savefig(os.path.join(run_dir, "drift.png"), dpi=120)
    plt.close(fig)


def variant(preset: str) -> types.SimpleNamespace:
    """The experiment under the name ``talpo-<preset>`` (its flags default to that preset)."""
    return types.SimpleNamespace(
        DESCRIPTION=f"TA-LPO vs LPO vs PPO: ES-meta-trained drifts at unseen horizons ({preset} preset)",
        add_arguments=lambda parser: add_arguments(parser, preset), main=main,
    )
