"""Reward-model ensembles against best-of-n overoptimisation (Coste et al., ICLR 2024; papers/preference-lm.md §6).

    python -m experiments reward-ensembles            # 5 worlds x 5 reward models (about 2 minutes on one core)
    python -m experiments reward-ensembles --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's best-of-n result, at toy scale): optimising a single learned
reward model by best-of-n sampling overoptimises it (the gold reward of the
selected response rises with n, then falls), while the conservative ensemble
objectives, worst-case (WCO: min over members) and uncertainty-weighted (UWO:
mean - lambda * variance, lambda 0.5), fall less and end higher.

Setup, everything exact (no sampling in the evaluation):

* Responses are all ``V**L`` token sequences (``SequenceSpace``; 8**4 = 4096) after a one-token prompt.
  The base policy is a broad random product distribution over them (``random_product_distribution``).
* Gold reward: a random 2-layer MLP on mean-pooled frozen random token embeddings (``random_mlp_reward``),
  standardised to mean 0 and std 1 under the base policy. A fresh one per world (seed).
* Proxy data: 4,000 pairs drawn from the base policy, labelled by the gold reward with 25% of the labels
  flipped (the paper's label noise).
* Proxy reward models: ``K = 5`` tiny Llama-style models with a scalar reward head, trained with the
  Bradley-Terry loss on the same pairs, differing only in their seed (initialisation and minibatch
  order), as in the paper; one vmapped call per world (``rljax.core.loop.run``). Their rewards are used
  as they come, without per-member normalisation, as in the official code.
* Best-of-n exactly: ``best_of_n_logp`` gives the distribution of the response that best-of-n sampling
  from the base policy selects under a proxy score, for every ``n`` in ``1, 2, 4, ..., 4096``, so the
  expected gold reward and ``KL(best-of-n || base)`` are exact sums over the 4096 responses (the paper
  estimates both from a pool of 12,600 samples, with the bound ``log n - (n - 1) / n`` for the KL).
* Proxies compared: each single member alone ("single", the mean of the ``K`` members' curves, as the
  paper's single-RM baseline), the ensemble ``mean``, ``wco`` and ``uwo`` (``ensemble_reward``); beside
  them the ``oracle``, best-of-n under the gold reward itself (the most any proxy could reach).

The claim's definition, fixed before the first full run (``result["claim"]["definition"]``): with
``n* = 1024`` (the digest's pool size) and per world the single-RM curve averaged over its members,

* ``single_overoptimises``: the single-RM gold at its peak over ``n <= n*`` minus its gold at ``n*`` is
  above 0 with a 95% interval over worlds above 0;
* for WCO and for UWO, ``falls_less``: its mean drop (peak - value at ``n*``) is below the single RM's,
  and ``ends_higher``: its mean gold at ``n*`` is above the single RM's.

Outputs in the run directory: ``config.json``, ``result.json`` (per proxy: the mean gold and KL curves
over ``n``, peak, value at ``n*`` and drop with 95% intervals over worlds, and the claim's booleans),
``gold_vs_kl.png`` (the paper's Figure 1 axes: gold reward against KL from the base policy) and
``world<i>/`` (the host loop's ``metrics.jsonl`` of the reward models' training and their checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.text.enumerable import (
    SequenceSpace, best_of_n_logp, exact_expectation, exact_kl, prompted_rows, random_mlp_reward,
    random_product_distribution,
)
from envs.text.preferences import sample_preference_pairs
from experiments.common import add_settings_arguments, settings_from_flags, setup_run
from rljax.core import loop as loop_lib
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plt, save_figure
from rljax.core.stats import mean_ci95
from rljax.lm import train as lm_train
from rljax.lm.data import tokenize_preferences
from rljax.lm.model import LanguageModel, LMConfig
from rljax.losses.preference import ensemble_reward

NAME = "reward-ensembles"
DESCRIPTION = "Reward-model ensembles (mean, WCO, UWO) vs a single RM under exact best-of-n: gold reward against KL"
PROMPT_TOKEN = 0
PROXIES = ("single", "mean", "wco", "uwo")
ORACLE = "oracle"  # best-of-n under the gold reward itself: the ceiling, reported beside the proxies


@dataclasses.dataclass(frozen=True)
class Settings:
    # response space, base policy and gold reward
    vocab_size: int = 8
    length: int = 4
    base_logit_std: float = 1.0
    gold_embed_dim: int = 16
    gold_hidden_size: int = 32
    # proxy preference data
    num_pairs: int = 4000
    label_noise: float = 0.25
    # reward models (Llama style, scalar reward head)
    members: int = 5
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 2
    # ensemble objectives and best-of-n
    uwo_coefficient: float = 0.5  # the paper's lambda for best-of-n
    max_log2_n: int = 12  # n = 1, 2, 4, ..., 2**max_log2_n
    claim_n: int = 1024  # n* of the claim
    worlds: int = 5


QUICK = dict(
    vocab_size=4, length=3, num_pairs=256, members=3, hidden_size=16, num_layers=1, num_heads=2,
    num_epochs=1, max_log2_n=6, claim_n=32, worlds=2,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set members=3 --set label_noise=0.0")


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = settings_from_flags(args, Settings(), QUICK)
    if s.worlds < 1 or s.members < 2:
        raise SystemExit(f"--set worlds / members: expected >= 1 world and >= 2 members, got {s.worlds} and {s.members}")
    if not 1 <= s.claim_n <= 2**s.max_log2_n:
        raise SystemExit(f"--set claim_n: expected a value in 1..2**max_log2_n = {2**s.max_log2_n}, got {s.claim_n}")
    if s.num_pairs < s.batch_size:
        raise SystemExit(f"--set num_pairs: expected at least one batch of {s.batch_size} pairs, got {s.num_pairs}")
    return s


def reward_model_config(s: Settings) -> LMConfig:
    return LMConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_layers=s.num_layers, num_heads=s.num_heads,
        max_position_embeddings=s.length + 1, style="llama", heads=("reward",),
    )


def make_world(s: Settings, space: SequenceSpace, base_probs: np.ndarray, key):
    """One world's gold reward over the space (standardised under the base policy) and its noisy pairs."""
    gold_key, pair_key = jax.random.split(key)
    raw = np.asarray(random_mlp_reward(gold_key, s.vocab_size, s.gold_embed_dim, s.gold_hidden_size)(space.sequences),
                     np.float64)
    mean = float(base_probs @ raw)
    std = float(np.sqrt(base_probs @ (raw - mean) ** 2))
    gold = ((raw - mean) / std).astype(np.float32)
    pairs = sample_preference_pairs(pair_key, space, base_probs, gold, s.num_pairs, label_noise=s.label_noise)
    return gold, pairs


def make_world_trainer(s: Settings, space: SequenceSpace, base_probs: np.ndarray, world_key, train_key, run_dir: str,
                       args: argparse.Namespace, run_config: dict):
    """``train_world(world) -> (gold [S], pairs, member_rewards [K, S], loop result)``: world ``world``'s gold
    reward and noisy pairs, and its ``K`` reward models trained by the host loop (metrics and checkpoints in
    ``run_dir/world<world>``), with their rewards over the whole space."""
    cfg = reward_model_config(s)
    rows = prompted_rows(space, PROMPT_TOKEN)
    train_config = lm_train.LMTrainConfig(
        model=cfg, objective="reward", batch_size=s.batch_size, num_epochs=s.num_epochs,
    )  # fmt: skip
    hparams = lm_train.LMHParams(learning_rate=s.learning_rate)
    rewards_fn = jax.jit(jax.vmap(lambda p: LanguageModel(cfg).apply({"params": p}, rows[0], rows[1]).rewards))

    def train_world(world: int):
        gold, pairs = make_world(s, space, base_probs, jax.random.fold_in(world_key, world))
        data = tokenize_preferences(
            [[PROMPT_TOKEN]] * len(pairs), pairs.chosen, pairs.rejected, None, s.length + 1,
            add_bos=False, add_eos=False, pad_id=PROMPT_TOKEN,
        )  # fmt: skip
        trainer = lm_train.make_train(train_config, data)
        world_dir = os.path.join(run_dir, f"world{world}")
        os.makedirs(world_dir, exist_ok=True)
        steps_per_epoch = s.num_pairs // s.batch_size
        result = loop_lib.run(
            trainer, jax.random.fold_in(train_key, world), hparams, num_seeds=s.members, run_dir=world_dir,
            config_dict=run_config | {"world": world}, resume=bool(args.resume),
            loop=loop_lib.LoopConfig(
                chunk_updates=steps_per_epoch, eval_every_chunks=0, checkpoint_every_chunks=s.num_epochs,
                progress=not args.no_progress, tensorboard=args.tensorboard,
            ),
        )  # fmt: skip
        return gold, pairs, rewards_fn(result.state.params), result

    return train_world


def best_of_n_curves(base_logp, scores, gold, ns):
    """Exact expected gold reward and KL from the base policy of best-of-n under ``scores`` [S]: ([len(ns)], [len(ns)])."""
    logps = jax.vmap(lambda n: best_of_n_logp(base_logp, scores, n))(ns)
    return jax.vmap(lambda lp: exact_expectation(lp, gold))(logps), jax.vmap(lambda lp: exact_kl(lp, base_logp))(logps)


def proxy_scores(member_rewards, uwo_coefficient: float) -> dict[str, jax.Array]:
    """Each proxy's scores over the space: "single" [K, S] (each member alone), the ensembles [S]."""
    return {
        "single": member_rewards,
        "mean": ensemble_reward(member_rewards, "mean"),
        "wco": ensemble_reward(member_rewards, "wco"),
        "uwo": ensemble_reward(member_rewards, "uwo", uwo_coefficient),
    }


def summarize(s: Settings, ns: np.ndarray, gold_curves: dict, kl_curves: dict, accuracy: np.ndarray) -> dict:
    """Per proxy, over worlds: mean curves, peak over n <= n*, value at n*, drop; and the claim."""
    at = int(np.searchsorted(ns, s.claim_n))
    proxies = {}
    for name in PROXIES + (ORACLE,):
        g = gold_curves[name]  # [worlds, len(ns)]
        peak, final = g[:, : at + 1].max(axis=1), g[:, at]
        proxies[name] = {
            "gold_curve": g.mean(axis=0).tolist(), "kl_curve": kl_curves[name].mean(axis=0).tolist(),
            "peak": mean_ci95(peak), "at_claim_n": mean_ci95(final), "drop": mean_ci95(peak - final),
            "peak_n_per_world": ns[g[:, : at + 1].argmax(axis=1)].tolist(), "at_claim_n_per_world": final.tolist(),
            "largest_n": mean_ci95(g[:, -1]),
        }
    single = proxies["single"]
    claim = {
        "claim_n": s.claim_n,
        "definition": (
            "per world, the single-RM gold curve is the mean of its members' curves; peak = the largest expected "
            "gold over n <= n*, drop = peak - gold at n*. single_overoptimises: mean drop > 0 with its 95% CI over "
            "worlds above 0. For wco and uwo: falls_less = mean drop below the single RM's; ends_higher = mean gold "
            "at n* above the single RM's."
        ),
        "single_overoptimises": bool(single["drop"]["mean"] > 0 and single["drop"]["ci95_low"] > 0),
    }
    for name in ("wco", "uwo"):
        gap = np.asarray(proxies[name]["at_claim_n_per_world"]) - np.asarray(single["at_claim_n_per_world"])
        claim[name] = {
            "falls_less": bool(proxies[name]["drop"]["mean"] < single["drop"]["mean"]),
            "ends_higher": bool(proxies[name]["at_claim_n"]["mean"] > single["at_claim_n"]["mean"]),
            "minus_single_at_claim_n": mean_ci95(gap) | {"per_world": gap.tolist()},
        }
    claim["holds"] = claim["single_overoptimises"] and all(
        claim[n]["falls_less"] and claim[n]["ends_higher"] for n in ("wco", "uwo")
    )
    return {
        "ns": ns.tolist(), "proxies": proxies, "claim": claim,
        "reward_model_train_accuracy": {"mean": float(accuracy.mean()), "per_world_member": accuracy.tolist()},
    }


def plot(s: Settings, result: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    labels = {"single": "single RM (mean of members)", "mean": "ensemble mean", "wco": "WCO (min)",
              "uwo": f"UWO (lambda {s.uwo_coefficient:g})", ORACLE: "oracle (best-of-n on the gold reward)"}
    for name in PROXIES + (ORACLE,):
        p = result["proxies"][name]
        ax.plot(p["kl_curve"], p["gold_curve"], marker="o", markersize=3, label=labels[name],
                linewidth=2.2 if name in ("single", "wco", "uwo") else 1.2,
                **({"color": "gray", "linestyle": "--"} if name == ORACLE else {}))
    kl_star = result["proxies"]["single"]["kl_curve"][int(np.searchsorted(result["ns"], s.claim_n))]
    ax.axvline(kl_star, color="gray", linestyle=":", linewidth=1)
    ax.annotate(f"n = {s.claim_n}", (kl_star, ax.get_ylim()[0]), fontsize=7, color="gray", va="bottom")
    ax.set_xlabel("KL(best-of-n || base policy), exact (nats)")
    ax.set_ylabel("expected gold reward of best-of-n (exact)")
    ax.set_title(f"Best-of-n, n = 1..{2 ** s.max_log2_n}: mean over {s.worlds} worlds, {s.members} RMs each",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    run_dir = setup_run(args, NAME)
    start = time.perf_counter()
    space = SequenceSpace(s.vocab_size, s.length)
    cfg = reward_model_config(s)
    key = jax.random.PRNGKey(args.seed)
    base_key, world_key, train_key = jax.random.split(key, 3)
    base_probs = random_product_distribution(base_key, s.vocab_size, s.length, s.base_logit_std)
    base_logp = jnp.asarray(np.log(base_probs), jnp.float32)
    ns = 2 ** np.arange(s.max_log2_n + 1)
    run_config = {"experiment": NAME, "settings": to_dict(s), "seed": args.seed, "model": to_dict(cfg),
                  "quick": bool(args.quick)}
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), run_config)
    print(f"Reward ensembles: {space}, {s.worlds} worlds x {s.members} reward models, {s.num_pairs} pairs "
          f"({s.label_noise:.0%} flipped), best-of-n up to n = {ns[-1]} -> {run_dir}")

    train_world = make_world_trainer(s, space, base_probs, world_key, train_key, run_dir, args, run_config)
    curves_fn = jax.jit(jax.vmap(best_of_n_curves, in_axes=(None, 0, None, None)))
    gold_curves = {name: np.zeros((s.worlds, len(ns))) for name in PROXIES + (ORACLE,)}
    kl_curves = {name: np.zeros((s.worlds, len(ns))) for name in PROXIES + (ORACLE,)}
    accuracy = np.zeros((s.worlds, s.members))
    compile_seconds = run_seconds = 0.0
    for world in range(s.worlds):
        gold, pairs, member_rewards, result = train_world(world)
        compile_seconds += result.compile_seconds
        run_seconds += result.run_seconds
        chosen, rejected = member_rewards[:, pairs.chosen_index], member_rewards[:, pairs.rejected_index]
        accuracy[world] = np.asarray((chosen > rejected).mean(axis=1))
        gold_j = jnp.asarray(gold)
        scores = proxy_scores(member_rewards, s.uwo_coefficient) | {ORACLE: gold_j}
        g, k = curves_fn(base_logp, scores["single"], gold_j, ns)  # [K, len(ns)]
        gold_curves["single"][world], kl_curves["single"][world] = np.asarray(g).mean(axis=0), np.asarray(k).mean(axis=0)
        for name in ("mean", "wco", "uwo", ORACLE):
            g, k = curves_fn(base_logp, scores[name][None], gold_j, ns)
            gold_curves[name][world], kl_curves[name][world] = np.asarray(g[0]), np.asarray(k[0])
        at = int(np.searchsorted(ns, s.claim_n))
        print(f"  world {world}: reward models' train accuracy {accuracy[world].mean():.3f} (labels {1 - s.label_noise:.0%} "
              f"right); gold at n = {s.claim_n}: " + ", ".join(f"{n} {gold_curves[n][world, at]:+.3f}" for n in PROXIES + (ORACLE,)))

    result = summarize(s, ns, gold_curves, kl_curves, accuracy)
    result |= {
        "experiment": NAME, "worlds": s.worlds, "members": s.members,
        "timing": {"compile_seconds": compile_seconds, "run_seconds": run_seconds,
                   "wall_seconds": time.perf_counter() - start},
    }
    write_json(os.path.join(run_dir, "result.json"), result)
    plot(s, result, os.path.join(run_dir, "gold_vs_kl.png"))
    c = result["claim"]
    print(f"single RM: gold peak {result['proxies']['single']['peak']['mean']:+.3f}, at n = {s.claim_n} "
          f"{result['proxies']['single']['at_claim_n']['mean']:+.3f} (overoptimises: {c['single_overoptimises']}); "
          + "; ".join(f"{n}: at n* {result['proxies'][n]['at_claim_n']['mean']:+.3f}, falls less {c[n]['falls_less']}, "
                      f"ends higher {c[n]['ends_higher']}" for n in ("wco", "uwo"))
          + f". Claim holds: {c['holds']}. {result['timing']['wall_seconds']:.0f} s")
    return result
