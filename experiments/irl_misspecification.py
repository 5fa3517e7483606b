"""How far from the truth can a misspecified IRL model's reward be? (Skalse & Abate, ICLR 2024;
papers/control-rl.md §13), on random stochastic MDPs, measured with the STARC distance.

    python -m experiments irl-misspecification            # 16 MDPs, both models (about 40 s on 2 CPU cores)
    python -m experiments irl-misspecification --quick    # tiny budget (seconds), for the smoke test

Claim (the paper's parameter results): a misspecified temperature (alpha of maximal causal entropy, beta of
Boltzmann rationality) is harmless, but an arbitrarily small error in the discount or in the transition
function lets IRL return a reward far from the true one.

Setup (float64 throughout):

* ``num_mdps`` random MDPs: ``num_states`` x ``num_actions``, ``tau(.|s, a) ~ Dirichlet(1)``, true reward
  ``R(s, a, s') ~ N(0, 1)``, discount ``gamma``. The demonstrator follows the MCE (or Boltzmann) policy ``pi``
  of ``R`` at ``temperature``.
* The learner assumes the same model with a misspecified parameter: the discount ``gamma + e`` (``gamma_errors``),
  the transitions ``(1 - e) tau + e rho`` with another random ``rho`` (``tau_errors``; total variation <= e),
  the temperature times ``e`` (``temperature_factors``), or nothing (the control). Every reward the assumed
  model maps to ``pi`` is one an IRL method may return: ``rljax.core.reward_theory.reward_set``,
  ``base(pi) + gamma' Phi(s') - Phi(s) + xi(s, a, s')`` with any potential ``Phi`` and any ``xi`` of zero mean
  under the assumed transitions.
* The worst case over that set: Adam (``learning_rate``, ``num_steps``) ascends the STARC distance to ``R``
  (value-adjusted levelling with the uniform policy under the *true* ``tau`` and ``gamma``; halved L2, in
  [0, 1]) over ``Phi = cap sigmoid(l) u / ||u||`` and ``zeta`` likewise, from ``num_restarts`` random starts,
  for each bound ``cap`` in ``scale_caps`` on the size of ``Phi`` and ``zeta``. Each found reward is checked
  by running the assumed model forward on it (``value_iters`` backups) and comparing with ``pi``.

The claim's definition, fixed before the first full run (``result["claims"]``), per model, at the largest cap:

* ``discount_error_breaks_robustness``: for every discount error (down to 0.001) the worst case is
  >= ``large`` (0.3) in every MDP;
* ``transition_error_breaks_robustness``: the same for every transition error;
* ``temperature_error_is_harmless``: for every temperature factor the worst case is <= ``tiny`` (1e-6) in
  every MDP, at every cap;
* ``correct_model_is_exact``: the same for the correctly specified model;
* ``found_rewards_reproduce_the_policy``: every reported reward's forward policy is within ``tiny`` of ``pi``.

Writes config.json, result.json, worst_case.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.common import add_settings_arguments, positive_floats, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.core import reward_theory as rt
from rljax.core.plotting import plt, save_figure

NAME = "irl-misspecification"
DESCRIPTION = "Skalse & Abate: worst-case STARC error of IRL under misspecified discount, transitions, temperature"
MODEL_STYLES = {"mce": "-", "boltzmann": "--"}


@dataclasses.dataclass(frozen=True)
class Settings:
    num_mdps: int = 16
    num_states: int = 6
    num_actions: int = 3
    gamma: float = 0.9
    temperature: float = 1.0
    gamma_errors: tuple[float, ...] = (-0.05, -0.01, -0.001, 0.001, 0.01, 0.05)
    tau_errors: tuple[float, ...] = (0.001, 0.01, 0.05)
    temperature_factors: tuple[float, ...] = (0.5, 2.0)
    scale_caps: tuple[float, ...] = (10.0, 100.0, 1e3, 1e4, 1e6)
    num_restarts: int = 4
    num_steps: int = 1000
    learning_rate: float = 0.05
    value_iters: int = 2000
    large: float = 0.3
    tiny: float = 1e-6


QUICK = {"num_mdps": 2, "num_restarts": 1, "num_steps": 30, "scale_caps": (10.0, 1e6), "value_iters": 400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_mdps=32 --set 'gamma_errors=(0.0001,)'")


class Problem(NamedTuple):
    transitions: jax.Array  # [S, A, S] the true tau
    reward: jax.Array  # [S, A, S] the true R
    other: jax.Array  # [S, A, S] rho, mixed into the assumed transitions


class Assumption(NamedTuple):
    """The learner's model parameters, one row per misspecification: ``[M]`` each."""

    gamma: jax.Array
    tau_error: jax.Array
    temperature: jax.Array


def misspecifications(s: Settings) -> tuple[list[tuple[str, float]], Assumption]:
    """``([(kind, error)], Assumption)``: the control, then each discount, transition and temperature error."""
    rows = [("exact", 0.0)] + [("gamma", e) for e in s.gamma_errors] + [("tau", e) for e in s.tau_errors] \
        + [("temperature", f) for f in s.temperature_factors]
    assumed = Assumption(
        gamma=jnp.asarray([s.gamma + e if kind == "gamma" else s.gamma for kind, e in rows]),
        tau_error=jnp.asarray([e if kind == "tau" else 0.0 for kind, e in rows]),
        temperature=jnp.asarray([s.temperature * f if kind == "temperature" else s.temperature for kind, f in rows]))
    return rows, assumed


def make_problem(s: Settings):
    def problem(key):
        k_tau, k_rho, k_r = jax.random.split(key, 3)
        dirichlet = lambda k: jax.random.dirichlet(k, jnp.ones(s.num_states), (s.num_states, s.num_actions))  # noqa: E731
        return Problem(dirichlet(k_tau), jax.random.normal(k_r, (s.num_states, s.num_actions, s.num_states)),
                       dirichlet(k_rho))

    return problem


def _direction(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x)


def make_worst_case(s: Settings, model: str):
    """``worst_case(problem, policy, assumption, cap, key) -> (distance, policy residual, ||R'|| / ||R||)`` after
    ascending the STARC distance over the assumed model's reward set from one random start."""
    optimizer = optax.adam(s.learning_rate)

    def worst_case(problem: Problem, policy, assumption: Assumption, cap, key):
        assumed_tau = (1 - assumption.tau_error) * problem.transitions + assumption.tau_error * problem.other

        def inferred(params):
            return rt.reward_set(model, policy, assumed_tau, gamma=assumption.gamma, temperature=assumption.temperature,
                                 potential=cap * jax.nn.sigmoid(params["log_phi"]) * _direction(params["phi"]),
                                 zeta=cap * jax.nn.sigmoid(params["log_zeta"]) * _direction(params["zeta"]))

        def distance(params):
            return rt.starc_distance(problem.reward, inferred(params), problem.transitions, gamma=s.gamma)

        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(lambda p: -distance(p))(params), opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        k_phi, k_zeta = jax.random.split(key)
        params = {"phi": jax.random.normal(k_phi, (s.num_states,)), "log_phi": jnp.zeros(()),
                  "zeta": jax.random.normal(k_zeta, problem.reward.shape), "log_zeta": jnp.zeros(())}
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=s.num_steps)
        reward = inferred(params)
        forward = rt.behavioural_policy(model, reward, assumed_tau, gamma=assumption.gamma,
                                        temperature=assumption.temperature, num_iters=s.value_iters)
        return (distance(params), jnp.abs(forward - policy).max(),
                jnp.linalg.norm(reward) / jnp.linalg.norm(problem.reward))

    return worst_case


def run_model(s: Settings, model: str, problems: Problem, assumed: Assumption, key):
    """Arrays ``[num_mdps, M, len(scale_caps), num_restarts]`` of distance, policy residual and norm ratio."""
    policies = jax.jit(jax.vmap(lambda p: rt.behavioural_policy(model, p.reward, p.transitions, gamma=s.gamma,
                                                                temperature=s.temperature, num_iters=s.value_iters)))(problems)
    restarts = jax.vmap(make_worst_case(s, model), in_axes=(None, None, None, None, 0))
    caps = jax.vmap(restarts, in_axes=(None, None, None, 0, None))
    rows = jax.vmap(caps, in_axes=(None, None, 0, None, None))
    mdps = jax.vmap(rows, in_axes=(0, 0, None, None, 0))
    keys = jax.random.split(key, (s.num_mdps, s.num_restarts))
    return [np.asarray(x) for x in jax.jit(mdps)(problems, policies, assumed, jnp.asarray(s.scale_caps), keys)]


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    for field in ("gamma_errors", "tau_errors"):
        if not getattr(s, field) or any(e == 0 for e in getattr(s, field)):
            raise SystemExit(f"--set {field}: expected one or more non-zero errors, got {getattr(s, field)}")
    if any(e < 0 or e > 1 for e in s.tau_errors):
        raise SystemExit(f"--set tau_errors: expected mixing weights in (0, 1], got {s.tau_errors}")
    if any(not 0 < s.gamma + e < 1 for e in s.gamma_errors + (0.0,)):
        raise SystemExit(f"--set gamma / gamma_errors: every gamma + error must lie in (0, 1), got gamma {s.gamma} "
                         f"and errors {s.gamma_errors}")
    positive_floats(s, "temperature_factors")
    positive_floats(s, "scale_caps")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    rows, _ = misspecifications(s)
    labels = [kind if kind == "exact" else f"{kind} {'x' if kind == 'temperature' else ''}{e:+g}".replace("x+", "x")
              for kind, e in rows]

    with jax.enable_x64(True):
        problem_key, search_key = jax.random.split(jax.random.PRNGKey(args.seed))
        problems = jax.vmap(make_problem(s))(jax.random.split(problem_key, s.num_mdps))
        # Built in float64: a float32 0.9 is itself a discount error of 2e-8, which a large enough potential exploits.
        _, assumed = misspecifications(s)
        per_model = {}
        for model, key in zip(rt.BEHAVIOURAL_MODELS, jax.random.split(search_key, len(rt.BEHAVIOURAL_MODELS))):
            t0 = time.time()
            distance, residual, ratio = run_model(s, model, problems, assumed, key)
            best = distance.argmax(-1)  # the restart that found the worst case
            pick = lambda x: np.take_along_axis(x, best[..., None], -1)[..., 0]  # noqa: E731
            per_model[model] = {"worst": distance.max(-1), "residual": residual.max(-1), "ratio": pick(ratio)}
            worst_at_cap = per_model[model]["worst"][:, :, -1]
            print(f"{model}: worst-case STARC at cap {s.scale_caps[-1]:g}, min over MDPs: "
                  + ", ".join(f"{label} {v:.3g}" for label, v in zip(labels, worst_at_cap.min(0)))
                  + f" ({time.time() - t0:.0f} s)", flush=True)

    kinds = np.asarray([kind for kind, _ in rows])
    claims = {}
    for name, kind, at_least in (("discount_error_breaks_robustness", "gamma", True),
                                 ("transition_error_breaks_robustness", "tau", True),
                                 ("temperature_error_is_harmless", "temperature", False),
                                 ("correct_model_is_exact", "exact", False)):
        if at_least:  # at the largest cap, the smallest worst case over MDPs
            value = {m: per_model[m]["worst"][:, kinds == kind, -1].min() for m in per_model}
            holds = all(v >= s.large for v in value.values())
        else:  # at every cap, the largest over MDPs
            value = {m: per_model[m]["worst"][:, kinds == kind].max() for m in per_model}
            holds = all(v <= s.tiny for v in value.values())
        claims[name] = {"holds": bool(holds), ("min_over_mdps_and_errors" if at_least else "max"):
                        {m: float(v) for m, v in value.items()}}
    residual = {m: float(per_model[m]["residual"].max()) for m in per_model}
    claims["found_rewards_reproduce_the_policy"] = {"holds": all(r <= s.tiny for r in residual.values()),
                                                    "max_policy_residual": residual}

    def summary(x):  # [num_mdps, M, caps] -> per label, per cap: min / mean / max over MDPs
        return {label: {f"{cap:g}": {"min": float(x[:, i, j].min()), "mean": float(x[:, i, j].mean()),
                                      "max": float(x[:, i, j].max())} for j, cap in enumerate(s.scale_caps)}
                for i, label in enumerate(labels)}

    result = {
        "misspecifications": labels, "scale_caps": list(s.scale_caps),
        "worst_case_starc": {m: summary(per_model[m]["worst"]) for m in per_model},
        "worst_case_starc_per_mdp_at_largest_cap": {m: {label: per_model[m]["worst"][:, i, -1].tolist()
                                                        for i, label in enumerate(labels)} for m in per_model},
        "reward_norm_ratio_of_worst_case": {m: summary(per_model[m]["ratio"]) for m in per_model},
        "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, s, rows, per_model)
    write_result(run_dir, result)
    return result


def plot(run_dir: str, s: Settings, rows: list[tuple[str, float]], per_model: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    kinds = [kind for kind, _ in rows]
    for model, res in per_model.items():
        worst = res["worst"]  # [num_mdps, M, caps]
        for kind, sign, color in (("gamma", 1, "tab:red"), ("gamma", -1, "tab:orange"), ("tau", 1, "tab:blue")):
            idx = [i for i, (k, e) in enumerate(rows) if k == kind and np.sign(e) == sign]
            if not idx:
                continue
            errors = [abs(rows[i][1]) for i in idx]
            name = {"gamma": f"discount {'+' if sign > 0 else '-'}e", "tau": "transitions, TV <= e"}[kind]
            axes[0].errorbar(errors, worst[:, idx, -1].mean(0), ls=MODEL_STYLES[model], marker="o", color=color,
                             yerr=[worst[:, idx, -1].mean(0) - worst[:, idx, -1].min(0),
                                   worst[:, idx, -1].max(0) - worst[:, idx, -1].mean(0)],
                             label=f"{model}: {name}", capsize=3)
            # How large the inferred reward must be: the worst case under each bound on Phi and zeta.
            for i in idx:
                axes[1].plot(s.scale_caps, worst[:, i].mean(0), ls=MODEL_STYLES[model], marker=".", color=color,
                             alpha=0.4 + 0.6 * (abs(rows[i][1]) == max(errors)), label=None)
        flat = [i for i, k in enumerate(kinds) if k in ("temperature", "exact")]
        axes[0].axhline(max(worst[:, flat].max(), 1e-14), ls=MODEL_STYLES[model], color="k",
                        label=f"{model}: temperature x{list(s.temperature_factors)} and exact (max)")
    axes[0].set(xscale="log", yscale="log", xlabel="size of the misspecification e",
                ylabel="worst-case STARC distance to the true reward", ylim=(1e-14, 2), title=f"largest cap "
                f"({s.scale_caps[-1]:g}); mean over {s.num_mdps} MDPs, bars: min-max")
    axes[0].legend(fontsize=7)
    axes[1].set(xscale="log", xlabel="bound on |Phi| and |zeta| (size of the inferred reward)",
                ylabel="worst-case STARC (mean over MDPs)", ylim=(0, 1),
                title="smaller errors need larger rewards (darkest: largest e)")
    save_figure(fig, os.path.join(run_dir, "worst_case.png"))
