"""MAMQL on Gems (Haynam et al. 2025, arXiv 2503.04679; papers/control-rl.md §1), exact tabular evaluation.

    python -m experiments mamql-gems                    # MLP critics, 5 seeds, 50 demonstrations each
    python -m experiments mamql-gems --critic tabular   # tabular critics (one parameter per joint state)
    python -m experiments mamql-gems --quick            # smoke test (seconds)
    python -m experiments mamql-gems --gpu              # continuous MAMQL on MABrax hopper_3x1 (experiments.mamql_brax)

Setup (``envs.multiagent.gems``: 5x5 grid, 2 agents, 3 gems valued differently by each
agent, general-sum; discount gamma = 0.9):

1. Experts: the logit quantal-response equilibrium of the game with rationality
   ``lam = 10``, from exact marginal soft-Q iteration (``rljax.core.tabular``); its
   fixed-point residual is reported.
2. Data: per seed, 50 expert episodes of 20 steps (time limit) sampled through the
   jitted env; seeds differ in the demonstrations and the table initialisation and are
   trained side by side in one vmapped call per method.
3. Methods (``rljax.agents.mamql``, same critic, optimiser and budget, ``lam`` known):
   MAMQL (marginal critics, chi-squared IQ-Learn), joint-action IQ-Learn per agent, BC.
   Critic (``--critic``, the same for all three): ``mlp`` (default) is, per agent, an MLP
   (hidden 64, 64, ReLU; full-batch Adam, lr 1e-3) of that agent's Gems observation (its
   own cell one-hot, the other's cell one-hot, gem flags: 53 features), as in the paper;
   ``tabular`` is one parameter per joint state and action (Adam, lr 0.05). Both: 2000
   full-batch updates. The default and these settings were fixed before the first full
   run with the MLP critic (the MLP settings were only checked for convergence on the
   3x3 test layout, and for speed on this layout with uniform-random demonstrations).
4. Metrics, exact (no sampling): each agent's expected discounted return when both
   agents play the learned policies, as % of the experts' (the uniform-random policy's %
   is reported for scale); and reward recovery: for agent i, in the MDP it faced (the
   other agent playing the expert policy), the weighted Pearson correlation between the
   recovered reward ``r_i(s, a_i)`` and the true ``E_{a_-i}[R_i(s, a_i, a_-i)]`` after both
   are canonicalised by exact least-squares removal of potential shaping
   (``tabular.canonicalize_shaping``). The weights (for the shaping fit and the
   correlation) are the expert's discounted state-action occupancy ``d_E(s) pi_E(a|s)``
   (non-terminal states). Secondary: the same with ``d_E(s) / |A|`` (every action equal).

Claims, fixed before the first full run (means over seeds, each agent separately):

* ``return``: MAMQL reaches >= 90% of the expert's return for each agent;
* ``reward``: MAMQL's canonicalised reward correlation is >= 0.8 for each agent;
* ``beats_baselines_return`` / ``beats_baselines_reward``: MAMQL's mean is higher than
  both baselines' for each agent.

Note (a property of the Boltzmann model and of this exact evaluation, not a tuning): under the Boltzmann model
``log pi_i / lam`` equals the reward up to shaping by ``Phi = V_i``, so after
canonicalisation a soft-Bellman-residual reward carries exactly the information of its
policy; BC's implied reward is therefore a strong baseline here.

Measured (full runs, 5 seeds, seed 0, one shared CPU core; means with 95% CI and per-seed
values in result.json), agent_0 / agent_1:

* ``--critic mlp`` (default; 173 s): return % of expert MAMQL 96.9 / 101.2, joint IQ
  96.9 / 101.5, BC 97.3 / 102.2; canonicalised reward Pearson MAMQL 0.21 / 0.24, joint IQ
  0.29 / 0.34, BC 0.22 / 0.25.
* ``--critic tabular`` (42 s): return MAMQL 93.7 / 99.7, joint IQ 93.9 / 100.0, BC
  94.1 / 100.1; Pearson MAMQL 0.13 / 0.16, joint IQ 0.14 / 0.15, BC 0.16 / 0.19.

Uniform random: 13.0 / 17.5% of the expert's return. With either critic the return claim
holds and the reward claim and both "beats the baselines" claims fail. The MLP critics
raise every method's reward correlation a little (by 0.06-0.19) but not near 0.8, and
joint IQ-Learn gains most. Every method fits the demonstrations equally well (same
demo_nll to 0.001).

Why the reward correlation is low (diagnosed; not a bug in the residual, the
canonicalisation or the metric):

* The pipeline is exact: the true reward, a potential-shaped copy of it, the reward
  recovered from the expert's own marginal soft Q, and ``log pi_E / lam`` all score 1.0000
  on this metric (``tests/test_mamql.py``).
* For ANY marginal critic the recovered reward is ``log pi / lam`` of the critic's own
  policy plus a potential shaping by its ``V``
  (``test_recovered_reward_of_any_marginal_critic_is_its_log_policy_up_to_shaping``),
  so MAMQL's (and BC's) reward correlation is that of its log-policy: it measures how
  well ``log pi_i(a|s)`` is estimated at the weighted (s, a), including actions never
  demonstrated there.
* The experts (lam = 10, rewards of order 1, gamma = 0.9) are nearly uniform: occupancy-
  weighted entropy 1.37 / 1.41 nats of log 5 = 1.61, most likely action 0.40 / 0.35. The
  canonicalised true reward's weighted standard deviation is 0.026, while ``log pi / lam``
  estimated from the ~3 visits per demonstrated state (50 episodes visit 306-374 of the
  5000 joint states, which carry ~80% of the expert's occupancy) has an error of order
  0.1: signal / noise gives a correlation of about 0.2.
* References (no learning; ``reference_policies``, in result.json): the expert's exact
  policy on every demonstrated state and uniform elsewhere (``coverage_ceiling``) scores
  about 0.79 / 0.85 -- below 0.8 for agent 0 even with no sampling noise; add-one action
  frequencies (``empirical_frequencies``) score about 0.31 / 0.36. In a side diagnostic
  (not part of this run; one or two demonstration sets) with 500 / 5000 demonstrations the
  coverage ceiling rose to 0.96 / 0.996 and add-0.1 counts to 0.43 / 0.72, while tabular
  MAMQL stayed at 0.14-0.27 (its log-probabilities of undemonstrated
  actions drift to about -15 against the expert's -2: the offline objective does not pin them).

Writes config.json, result.json and mamql_gems.png to the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.multiagent import gems as gems_lib
from experiments import mamql_brax
from experiments.common import add_run_arguments, apply_gpu_defaults, setup_run
from rljax.agents import mamql
from rljax.core import tabular
from rljax.core.config import to_dict
from rljax.core.logging import write_json
from rljax.core.stats import mean_ci95
from rljax.core.plotting import plt, save_figure

NAME = "mamql-gems"
GEMS_ENV = "multiagent/gems"
DESCRIPTION = "MAMQL (Haynam et al. 2025) vs BC vs joint IQ-Learn on a 2-agent general-sum Gems grid, exact evaluation"

RETURN_MIN_PERCENT = 90.0
REWARD_CORR_MIN = 0.8
METHODS = ("mamql", "joint_iq", "bc")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that defines a run (written to config.json)."""

    grid_size: int = 5
    max_steps_in_episode: int = 20
    gamma: float = 0.9
    lam: float = 10.0
    num_demos: int = 50
    critic: str = "mlp"  # overridden by --critic
    hidden_sizes: tuple[int, ...] = (64, 64)  # mlp critic
    num_updates: int = 2000
    tabular_learning_rate: float = 0.05
    mlp_learning_rate: float = 1e-3
    alpha: float = 0.5
    qre_tol: float = 1e-5  # float32: the residual stalls a little above 1e-6
    qre_damping: float = 0.0
    qre_max_iters: int = 10_000


QUICK = Settings(num_demos=5, num_updates=20)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, help="demonstration sets / initialisations, trained side by side "
                        "(default 5; 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument("--env", default=GEMS_ENV, help=f"{GEMS_ENV} or a JaxMARL MABrax env (jaxmarl/hopper_3x1, "
                        "jaxmarl/halfcheetah_6x1: continuous MAMQL, experiments.mamql_brax)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="a smoke test (Gems: 5 demonstrations, 20 updates)")
    scale.add_argument("--gpu", action="store_true", help=f"the brax scale-up ({mamql_brax.GPU_ENV}: a SAC expert, 50 "
                       "demonstrations, 1e5 gradient steps per method): a GPU run")
    parser.add_argument("--critic", choices=mamql.CRITICS, default=Settings.critic,
                        help="critic of every method: an MLP of each agent's observation (default), or a table "
                        "over joint states")
    add_run_arguments(parser, NAME)


def make_reward_scorer(game, expert_policies, weights_by_agent, gamma):
    """``score(rewards [N, S, A]) -> [N]`` weighted Pearson of canonicalised recovered vs true marginal reward.

    Agent i's MDP is the game with the other agents playing the experts' policies; the
    shaping fit is factorised once per agent and reused for every method and seed.
    """
    canonicalizers, true_canonical = [], []
    for i in range(game.num_agents):
        next_idx, probs, true_reward = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                                           expert_policies, i)
        canon = tabular.ShapingCanonicalizer(next_idx, probs, game.terminal, weights_by_agent[i], gamma=gamma)
        canonicalizers.append(canon)
        true_canonical.append(canon(true_reward))

    def score(rewards) -> list[float]:
        return [tabular.weighted_pearson(true_canonical[i], canonicalizers[i](rewards[i]), weights_by_agent[i])
                for i in range(game.num_agents)]

    return score


def reference_policies(expert, demos, num_states: int) -> dict[str, np.ndarray]:
    """Policies ``[N, S, A]`` that bound what 50 demonstrations can tell the reward metric (no learning).

    Under the Boltzmann model a soft-Bellman-residual reward is, after canonicalisation,
    exactly ``log pi / lam`` of its own policy (``mamql.recovered_rewards``), so every
    method's reward correlation is that of its policy's log-probabilities. Two references:

    * ``coverage_ceiling``: the expert's exact policy at every demonstrated state and the
      uniform policy elsewhere: a learner that is perfect on the data and knows nothing
      else (no sampling noise at all; an MLP may generalise beyond it);
    * ``empirical_frequencies``: the demonstrated action frequencies per state with
      Laplace's add-one rule (uniform at undemonstrated states): the plain count estimate
      of the same log-probabilities.

    ``demos`` is one seed's ``mamql.Demonstrations``.
    """
    expert = np.asarray(expert, np.float64)
    num_agents, _, num_actions = expert.shape
    valid = np.asarray(demos.valid, bool)
    states = np.asarray(demos.state)[valid]
    actions = np.asarray(demos.actions)[valid]
    counts = np.zeros((num_agents, num_states, num_actions))
    for i in range(num_agents):
        np.add.at(counts[i], (states, actions[:, i]), 1.0)
    seen = np.zeros(num_states, bool)
    seen[states] = True
    return {"coverage_ceiling": np.where(seen[None, :, None], expert, 1.0 / num_actions),
            "empirical_frequencies": (counts + 1.0) / (counts + 1.0).sum(-1, keepdims=True)}


REFERENCES = ("coverage_ceiling", "empirical_frequencies")


def _plot(summary: dict, path: str, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    agents = summary["agents"]
    width = 0.25
    colors = {"mamql": "tab:blue", "joint_iq": "tab:orange", "bc": "tab:green"}
    for ax, metric, ylabel, line in (
        (axes[0], "return_percent", "return, % of expert (95% CI over seeds)", RETURN_MIN_PERCENT),
        (axes[1], "reward_corr", "canonicalised reward Pearson (95% CI)", REWARD_CORR_MIN),
    ):
        for k, method in enumerate(METHODS):
            stats = [summary["methods"][method][metric][a] for a in agents]
            means = np.array([s["mean"] for s in stats])
            err = [means - [s["ci95_low"] for s in stats], [s["ci95_high"] for s in stats] - means]
            xs = np.arange(len(agents)) + (k - 1) * width
            ax.bar(xs, means, width, yerr=err, capsize=3, color=colors[method], label=method)
            for x, m in zip(xs, means):
                ax.text(x, m, f"{m:.2f}" if metric == "reward_corr" else f"{m:.0f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(line, color="tab:red", linestyle="--", linewidth=0.8, label=f"claim >= {line:g}")
        if metric == "return_percent":
            for a_i, a in enumerate(agents):
                ax.plot([a_i - 0.4, a_i + 0.4], [summary["random_return_percent"][a]] * 2, "k:", linewidth=1,
                        label="uniform random" if a_i == 0 else None)
        else:
            ceiling = summary["references"]["coverage_ceiling"]["reward_corr"]
            for a_i, a in enumerate(agents):
                ax.plot([a_i - 0.4, a_i + 0.4], [ceiling[a]["mean"]] * 2, "k:", linewidth=1,
                        label="expert on demonstrated states, uniform elsewhere" if a_i == 0 else None)
        ax.set_xticks(np.arange(len(agents)), agents)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    apply_gpu_defaults(args, add_arguments, {"env": mamql_brax.GPU_ENV})
    settings = dataclasses.replace(QUICK if args.quick else Settings(), critic=args.critic)
    args.seeds = args.seeds or (2 if args.quick else 5)
    if args.seeds < 1:
        raise SystemExit(f"--seeds: expected a positive number, got {args.seeds}")
    if args.env != GEMS_ENV and not args.env.startswith("jaxmarl/"):
        raise SystemExit(f"--env: expected {GEMS_ENV} or jaxmarl/<MABrax id>, got {args.env!r}")
    run_dir = setup_run(args, NAME)
    if args.env != GEMS_ENV:
        return mamql_brax.main(args, run_dir)
    start = time.perf_counter()
    env, env_params = gems_lib.make(size=settings.grid_size, max_steps_in_episode=settings.max_steps_in_episode)
    game = env.tabular()
    gamma, lam = settings.gamma, settings.lam
    learning_rate = settings.mlp_learning_rate if settings.critic == "mlp" else settings.tabular_learning_rate
    hparams = mamql.MAMQLHParams(learning_rate=learning_rate, gamma=gamma, lam=lam, alpha=settings.alpha)
    # Each agent's observation of every joint state, [N, S, F]: the MLP critics' inputs.
    features = mamql.observation_features(env) if settings.critic == "mlp" else None
    criteria = {"return_min_percent": RETURN_MIN_PERCENT, "reward_corr_min": REWARD_CORR_MIN,
                "aggregation": "means over seeds, each agent separately; beats = higher mean than both baselines"}
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": NAME, "settings": to_dict(settings), "quick": bool(args.quick), "seeds": args.seeds,
        "seed": args.seed, "hparams": to_dict(hparams), "criteria": criteria,
        "env": {"size": env.size, "start_cells": env.start_cells.tolist(), "gem_cells": env.gem_cells.tolist(),
                "gem_values": env.gem_values.tolist(), "num_states": env.num_states},
    })

    # 1. Experts: logit QRE by marginal soft-Q iteration.
    qre = jax.jit(lambda: tabular.marginal_soft_q_iteration(
        game.next_state, game.rewards, game.terminal, gamma=gamma, lam=lam, damping=settings.qre_damping,
        tol=settings.qre_tol, max_iters=settings.qre_max_iters))()
    expert = qre.policies
    returns = lambda pol: np.asarray(tabular.expected_returns(  # noqa: E731
        game.next_state, game.rewards, game.terminal, game.initial, pol, gamma=gamma), np.float64)
    expert_return = returns(expert)
    random_return = returns(jnp.full_like(expert, 1.0 / game.num_actions))
    occupancy = np.asarray(tabular.state_occupancy(game.next_state, game.terminal, game.initial, expert, gamma=gamma))
    occupancy = occupancy * ~game.terminal
    weights = {"expert_occupancy": [occupancy[:, None] * np.asarray(expert[i]) for i in range(game.num_agents)],
               "uniform_actions": [np.repeat(occupancy[:, None], game.num_actions, 1) / game.num_actions] * game.num_agents}
    score = {name: make_reward_scorer(game, expert, w, gamma) for name, w in weights.items()}

    # 2. Demonstrations, one set per seed.
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    demo_keys, init_keys = keys, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    demos = jax.jit(jax.vmap(lambda k: mamql.collect_demonstrations(env, env_params, expert, k, settings.num_demos)))(
        demo_keys)
    print(f"MAMQL on Gems: {game.num_states} joint states, QRE residual {float(qre.residual):.2e} after "
          f"{int(qre.iterations)} iterations; expert returns {np.round(expert_return, 3).tolist()}, "
          f"{settings.num_demos} demos x {args.seeds} seeds -> {run_dir}")

    agents = list(env.agents)
    # References (no learning): what the demonstrations allow on the reward metric, per seed.
    reference_corr = {name: [] for name in REFERENCES}
    for s in range(args.seeds):
        one_seed = jax.tree.map(lambda x, s=s: x[s], demos)
        for name, policy in reference_policies(expert, one_seed, game.num_states).items():
            reference_corr[name].append(score["expert_occupancy"](np.log(policy) / lam))
    references = {name: {"reward_corr": {a: mean_ci95(np.asarray(v)[:, i]) for i, a in enumerate(agents)},
                         "per_seed_reward_corr": v} for name, v in reference_corr.items()}

    # 3. Train every method, seeds vmapped.
    results, train_seconds = {}, {}
    for method in METHODS:
        config = mamql.MAMQLConfig(num_agents=game.num_agents, num_states=game.num_states,
                                   num_actions=game.num_actions, method=method, critic=settings.critic,
                                   hidden_sizes=settings.hidden_sizes, num_updates=settings.num_updates)
        t0 = time.perf_counter()
        states, metrics = jax.jit(jax.vmap(lambda k, d, c=config: mamql.make_train(c, d, features)(k, hparams)))(
            init_keys, demos)
        jax.block_until_ready(states.params)
        train_seconds[method] = time.perf_counter() - t0
        per_seed = {"return": [], "return_percent": [], "reward_corr": [], "reward_corr_uniform_actions": [],
                    "demo_nll": [], "final_loss": np.asarray(metrics["loss"][:, -1]).tolist()}
        for s in range(args.seeds):
            tables = mamql.critic_tables(config, jax.tree.map(lambda x, s=s: x[s], states.params), features)
            policies = mamql.policy_table(config, tables, hparams)
            ret = returns(policies)
            rewards = mamql.recovered_rewards(config, tables, hparams, jnp.asarray(game.next_state),
                                              jnp.asarray(game.terminal), expert)
            per_seed["return"].append(ret.tolist())
            per_seed["return_percent"].append((100.0 * ret / expert_return).tolist())
            per_seed["reward_corr"].append(score["expert_occupancy"](rewards))
            per_seed["reward_corr_uniform_actions"].append(score["uniform_actions"](rewards))
            per_seed["demo_nll"].append(np.asarray(mamql.demonstration_nll(policies, jax.tree.map(lambda x: x[s], demos))).tolist())
        summary = {"per_seed": per_seed}
        for metric in ("return_percent", "reward_corr", "reward_corr_uniform_actions"):
            values = np.asarray(per_seed[metric])  # [seeds, agents]
            summary[metric] = {a: mean_ci95(values[:, i]) for i, a in enumerate(agents)}
        results[method] = summary

    def mean(method, metric, agent):
        return results[method][metric][agent]["mean"]

    claims = {
        "return": all(mean("mamql", "return_percent", a) >= RETURN_MIN_PERCENT for a in agents),
        "reward": all(mean("mamql", "reward_corr", a) >= REWARD_CORR_MIN for a in agents),
        "beats_baselines_return": all(mean("mamql", "return_percent", a) > mean(b, "return_percent", a)
                                      for a in agents for b in METHODS if b != "mamql"),
        "beats_baselines_reward": all(mean("mamql", "reward_corr", a) > mean(b, "reward_corr", a)
                                      for a in agents for b in METHODS if b != "mamql"),
    }
    claims["all"] = all(claims.values())
    wall = time.perf_counter() - start
    summary = {
        "experiment": NAME, "quick": bool(args.quick), "critic": settings.critic, "seeds": args.seeds,
        "seed": args.seed, "agents": agents, "criteria": criteria, "claims": claims,
        "expert": {"return": expert_return.tolist(), "qre_residual": float(qre.residual),
                   "qre_iterations": int(qre.iterations), "lam": lam, "gamma": gamma},
        "random_return_percent": {a: float(100 * random_return[i] / expert_return[i]) for i, a in enumerate(agents)},
        "references": references,
        "demonstrated_states_per_seed": [int(np.unique(np.asarray(demos.state[s])[np.asarray(demos.valid[s])]).size)
                                         for s in range(args.seeds)],
        "demonstrations": {"episodes_per_seed": settings.num_demos,
                           "valid_transitions_per_seed": np.asarray(demos.valid.sum(1)).tolist(),
                           "terminated_episodes_per_seed": np.asarray(demos.terminated.sum(1)).tolist()},
        "reward_metric": "weighted Pearson after least-squares potential-shaping removal in each agent's induced MDP; "
                         "weights d_E(s) pi_E(a|s) (reward_corr) or d_E(s)/|A| (reward_corr_uniform_actions)",
        "methods": results, "train_seconds": train_seconds, "wall_seconds": wall, "devices": jax.device_count(),
    }
    write_json(os.path.join(run_dir, "result.json"), summary)
    _plot(summary, os.path.join(run_dir, "mamql_gems.png"),
          f"Gems 5x5, {settings.critic} critics, {settings.num_demos} demos, {args.seeds} seeds (exact evaluation)")

    for method in METHODS:
        cells = [f"{a}: return {mean(method, 'return_percent', a):5.1f}%  corr {mean(method, 'reward_corr', a):+.3f} "
                 f"(uniform-action weights {mean(method, 'reward_corr_uniform_actions', a):+.3f})" for a in agents]
        print(f"  {method:<9} " + " | ".join(cells))
    print("  random    " + " | ".join(f"{a}: return {summary['random_return_percent'][a]:5.1f}%" for a in agents))
    for name in REFERENCES:
        corr = references[name]["reward_corr"]
        print(f"  reference {name}: " + " | ".join(f"{a}: corr {corr[a]['mean']:+.3f}" for a in agents))
    print(f"claims: {claims}")
    print(f"wall {wall:.1f} s; wrote {run_dir}")
    return summary
