"""Tasks a Markov reward cannot express (Subramani et al., ICLR 2024, "On the Expressivity of
Objective-Specification Formalisms in RL"; papers/control-rl.md §14), on a corridor.

    python -m experiments expressivity            # about 10 s on 2 CPU cores
    python -m experiments expressivity --quick    # fewer policies and Frank-Wolfe steps, for the smoke test

Claim (two of the paper's separations, made concrete): an outer nonlinear Markov reward (ONMR: the minimum
of two objectives) and a reward machine (RM: "visit A, then B") each order policies in a way that no Markov
reward (MR), at any of the tested discounts, reproduces; each formalism's own optimiser finds its optimum.

Setup: cells ``0 .. num_cells - 1`` in a line, actions left / right (pushing into a wall stays), start in the
middle, A = the left end, B = the right end, discount ``gamma``, all exact (float64).

* ONMR: ``min(J_A(pi), J_B(pi))`` with ``R_A = 1[s' = A]``, ``R_B = 1[s' = B]``. Optimised over occupancy
  measures by Frank-Wolfe (``rljax.core.formalisms.frank_wolfe_max_min``) and exactly by LP (``max_min_lp``);
  checked against every deterministic stationary policy.
* RM: a 3-state machine (start, seen A, done) that pays 1 on entering B after A. Optimised by value iteration on
  the product MDP (finite-memory policies); checked against every deterministic product policy, and against
  every deterministic and ``num_random`` random stochastic stationary policies.
* Expressibility: ``num_random`` random stochastic stationary policies (Dirichlet(1) per state), every
  deterministic one, and the ONMR optimum; for each task and each MR discount in ``mr_gammas``,
  ``markov_reward_lp`` looks for ``R`` with ``J_R(pi_i) - J_R(pi_j) >= 1`` whenever the task strictly prefers
  ``pi_i``. The control task, ``J_A`` itself (a Markov reward), must come out expressible at ``gamma``.

The claim's definition, fixed before the first full run (``result["claims"]``):

* ``max_min_optimum_is_stochastic``: Frank-Wolfe ends within 0.2% of the LP optimum, and that optimum beats the
  best deterministic stationary policy by at least ``margin`` (0.01);
* ``reward_machine_needs_memory``: value iteration on the product equals the best deterministic product policy
  (to 1e-9) and beats every stationary policy tested by at least ``margin``;
* ``no_markov_reward_expresses_either``: the LP is infeasible for both tasks at every MR discount;
* ``markov_control_is_expressible``: the LP is feasible for the control at ``gamma``, and its reward orders
  every strictly preferred pair correctly.

Writes config.json, result.json, corridor.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import add_settings_arguments, positive_floats, settings_from_flags, setup_run, write_result, write_settings_config
from rljax.core import formalisms as fm
from rljax.core import reward_theory as rt
from rljax.core.plotting import plt, save_figure

NAME = "expressivity"
DESCRIPTION = "Subramani et al.: max-min (ONMR) and 'A then B' (reward machine) tasks no Markov reward expresses"
A_THEN_B = fm.RewardMachine(next_state=np.array([[0, 1, 0], [1, 1, 2], [2, 2, 2]]),  # labels: none, A, B
                            reward=np.array([[0.0, 0, 0], [0, 0, 1], [0, 0, 0]]), initial=0)


@dataclasses.dataclass(frozen=True)
class Settings:
    num_cells: int = 5
    gamma: float = 0.9
    mr_gammas: tuple[float, ...] = (0.5, 0.9, 0.99)
    num_random: int = 200
    fw_steps: int = 30_000
    margin: float = 0.01


QUICK = {"num_random": 20, "fw_steps": 3000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, NAME, "--set num_cells=7 --set 'mr_gammas=(0.3,0.999)'")


def corridor(num_cells: int) -> np.ndarray:
    """``tau [S, 2, S]``: left / right along a line; pushing into either wall stays put."""
    tau = np.zeros((num_cells, 2, num_cells))
    for s in range(num_cells):
        tau[s, 0, max(s - 1, 0)] = tau[s, 1, min(s + 1, num_cells - 1)] = 1.0
    return tau


def entering(cell: int, num_cells: int) -> np.ndarray:
    """``R(s, a, s') = 1[s' = cell]`` ``[S, 2, S]``."""
    reward = np.zeros((num_cells, 2, num_cells))
    reward[:, :, cell] = 1.0
    return reward


def occupancies(tau, policies, initial, gamma) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(lambda p: fm.occupancy(tau, p, initial, gamma=gamma)))(jnp.asarray(policies)))


def returns(tau, policies, initial, gamma, reward) -> np.ndarray:
    """``J_R(pi)`` of each policy ``[P]`` (without keeping the occupancy measures: the product has 2^(3 n) policies)."""
    one = lambda p: jnp.vdot(fm.occupancy(tau, p, initial, gamma=gamma), reward)  # noqa: E731
    return np.asarray(jax.jit(lambda ps: jax.lax.map(one, ps, batch_size=4096))(jnp.asarray(policies)))


def main(args) -> dict:
    s = settings_from_flags(args, Settings(), QUICK)
    if not 3 <= s.num_cells <= 6:
        raise SystemExit(f"--set num_cells: expected 3 to 6 cells (A, a start between, B; the product with the "
                         f"3-state machine has 2^(3 n) deterministic policies to enumerate), got {s.num_cells}")
    if not 0 < s.gamma < 1 or any(not 0 < g < 1 for g in positive_floats(s, "mr_gammas")):
        raise SystemExit(f"--set gamma / mr_gammas: discounts must lie in (0, 1), got {s.gamma} and {s.mr_gammas}")
    run_dir = setup_run(args, NAME)
    write_settings_config(run_dir, args, NAME, s)
    start = time.time()
    n, a_cell, b_cell = s.num_cells, 0, s.num_cells - 1
    initial = np.eye(n)[n // 2]

    with jax.enable_x64(True):
        tau = corridor(n)
        objectives = np.stack([entering(a_cell, n), entering(b_cell, n)])  # [2, S, 2, S]
        deterministic = fm.deterministic_policies(n, 2)
        random = np.asarray(jax.random.dirichlet(jax.random.PRNGKey(args.seed), jnp.ones(2), (s.num_random, n)))

        # ONMR max-min: Frank-Wolfe, the exact LP, and every deterministic policy.
        t0 = time.time()
        fw = jax.jit(lambda: fm.frank_wolfe_max_min(jnp.asarray(tau), jnp.asarray(objectives), jnp.asarray(initial),
                                                    gamma=s.gamma, num_iters=s.fw_steps))()
        lp_value, _ = fm.max_min_lp(tau, objectives, initial, gamma=s.gamma)
        det_min = np.einsum("psat,ksat->pk", occupancies(tau, deterministic, initial, s.gamma), objectives).min(-1)
        fw_value = float(fw.values[-1])
        print(f"max-min: Frank-Wolfe {fw_value:.5f}, LP {lp_value:.5f}, best deterministic {det_min.max():.5f}; "
              f"optimal pi(right | cell) = {np.round(np.asarray(fw.policy)[:, 1], 3).tolist()} ({time.time() - t0:.0f} s)",
              flush=True)

        # RM "A then B": value iteration on the product, every deterministic product policy, stationary policies.
        product_tau, product_reward, product_start = fm.reward_machine_product(
            tau, np.eye(n, dtype=int)[a_cell] + 2 * np.eye(n, dtype=int)[b_cell], A_THEN_B, initial)
        num_machine = A_THEN_B.next_state.shape[0]
        q = rt.optimal_q_values(jnp.asarray(product_reward), jnp.asarray(product_tau), gamma=s.gamma)
        rm_optimum = float(product_start @ np.asarray(q.max(-1)))
        product_policies = fm.deterministic_policies(n * num_machine, 2)
        rm_brute = float(returns(product_tau, product_policies, product_start, s.gamma, product_reward).max())

        def rm_values(policies):  # stationary base policies, run through the machine
            return returns(product_tau, np.repeat(policies, num_machine, axis=1), product_start, s.gamma, product_reward)

        stationary = np.concatenate([deterministic, random, np.asarray(fw.policy)[None]])
        rm_stationary = rm_values(stationary)
        print(f"A then B: product VI {rm_optimum:.5f}, best of {len(product_policies)} deterministic product policies "
              f"{rm_brute:.5f}, best stationary {rm_stationary.max():.5f} (deterministic {rm_stationary[:len(deterministic)].max():.5f})",
              flush=True)

        # Can a Markov reward at some discount order the stationary policies like each task?
        tasks = {
            "max_min": np.einsum("psat,ksat->pk", occupancies(tau, stationary, initial, s.gamma), objectives).min(-1),
            "a_then_b": rm_stationary,
            "control_J_A": np.einsum("psat,sat->p", occupancies(tau, stationary, initial, s.gamma), objectives[0]),
        }
        expressible = {}
        for mr_gamma in s.mr_gammas:
            occ = occupancies(tau, stationary, initial, mr_gamma)
            for task, values in tasks.items():
                res = fm.markov_reward_lp(occ, values)
                entry = {"feasible": bool(res.feasible), "strict_pairs": res.num_constraints}
                if not res.feasible:  # the Farkas certificate's residual and how many pairs it combines
                    entry |= {"certificate_residual": res.residual, "certificate_pairs": int((res.certificate > 1e-12).sum())}
                if res.feasible:
                    j = np.einsum("psat,sat->p", occ, res.reward)
                    better, worse = np.nonzero(values[:, None] > values[None] + 1e-9)
                    entry["smallest_margin"] = float((j[better] - j[worse]).min())
                expressible.setdefault(task, {})[f"{mr_gamma:g}"] = entry
            print(f"MR at gamma {mr_gamma:g}: " + ", ".join(f"{t} {'expressible' if expressible[t][f'{mr_gamma:g}']['feasible'] else 'not expressible'}"
                                                          for t in tasks), flush=True)

    control = expressible["control_J_A"].get(f"{s.gamma:g}")
    claims = {
        "max_min_optimum_is_stochastic": {
            "holds": bool(abs(fw_value - lp_value) <= 2e-3 * abs(lp_value) and lp_value >= det_min.max() + s.margin),
            "frank_wolfe": fw_value, "lp": lp_value, "best_deterministic": float(det_min.max())},
        "reward_machine_needs_memory": {
            "holds": bool(abs(rm_optimum - rm_brute) <= 1e-9 and rm_optimum >= rm_stationary.max() + s.margin),
            "product_value_iteration": rm_optimum, "best_deterministic_product_policy": rm_brute,
            "best_stationary": float(rm_stationary.max())},
        "no_markov_reward_expresses_either": {
            "holds": not any(e["feasible"] for t in ("max_min", "a_then_b") for e in expressible[t].values()),
            "mr_gammas": list(s.mr_gammas)},
        "markov_control_is_expressible": {
            "holds": bool(control is not None and control["feasible"] and control["smallest_margin"] >= 1 - 1e-6),
            "at_gamma": s.gamma, "lp": control},
    }
    result = {
        "max_min": {"frank_wolfe": fw_value, "lp": lp_value, "best_deterministic": float(det_min.max()),
                    "policy_right": np.asarray(fw.policy)[:, 1].tolist(),
                    "frank_wolfe_curve": np.asarray(fw.values)[:: max(1, s.fw_steps // 300)].tolist()},
        "a_then_b": {"product_value_iteration": rm_optimum, "best_deterministic_product_policy": rm_brute,
                     "num_product_policies": len(product_policies), "best_stationary": float(rm_stationary.max()),
                     "best_deterministic_stationary": float(rm_stationary[: len(deterministic)].max())},
        "expressible_by_markov_reward": expressible, "num_policies": len(stationary),
        "claims": claims, "seconds": time.time() - start,
    }
    plot(run_dir, s, result, tasks, len(deterministic))
    write_result(run_dir, result)
    return result


def plot(run_dir: str, s: Settings, result: dict, tasks: dict, num_deterministic: int) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    curve = np.asarray(result["max_min"]["frank_wolfe_curve"])
    axes[0].plot(np.linspace(0, s.fw_steps, len(curve)), curve, label="Frank-Wolfe")
    axes[0].axhline(result["max_min"]["lp"], color="k", ls="--", label="LP optimum")
    axes[0].axhline(result["max_min"]["best_deterministic"], color="tab:red", ls=":", label="best deterministic")
    axes[0].set(xlabel="Frank-Wolfe step", ylabel="min(J_A, J_B)", title="max-min over occupancy measures")
    axes[0].legend(fontsize=8)
    for ax, task, title in ((axes[1], "max_min", "max-min (ONMR)"), (axes[2], "a_then_b", "A then B (reward machine)")):
        values = tasks[task]
        ax.scatter(tasks["control_J_A"][num_deterministic:], values[num_deterministic:], s=8, label="random stochastic")
        ax.scatter(tasks["control_J_A"][:num_deterministic], values[:num_deterministic], s=20, marker="x",
                   color="tab:red", label="deterministic")
        ax.set(xlabel="J_A (a Markov reward)", ylabel=f"{title} value", title=f"{title}: stationary policies")
        ax.legend(fontsize=8)
    axes[2].axhline(result["a_then_b"]["product_value_iteration"], color="k", ls="--", label="with memory (product VI)")
    axes[2].legend(fontsize=8)
    save_figure(fig, os.path.join(run_dir, "corridor.png"))
