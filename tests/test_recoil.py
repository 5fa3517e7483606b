"""ReCOIL: the dual on hand values and on an exact tabular MDP, the agent under jit/vmap, errors, the CLI."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.agents import recoil
from rljax.core import dataset as dataset_lib
from rljax.core import offline
from rljax.core.config import ConfigError, broadcast_hparams
from rljax.core.dataset import DatasetError

# ---------------------------------------------------------------- (a) the loss on hand values


def test_critic_loss_on_hand_computed_inputs():
    # y = target - q: expert [-1, -2], suboptimal [1]; chi2 f*(y) = y + y^2/4 -> [-0.75, -1.0] and [1.25]
    # J = 0.5 * mean(-0.75, -1.0) + 0.5 * 1.25 - 0.5 * 1 = -0.4375 + 0.625 - 0.5
    args = (jnp.array([1.0, 2.0]), jnp.zeros(2), jnp.array([0.5]), jnp.array([1.5]), 0.5)
    loss, aux = recoil.recoil_critic_loss(*args, "chi2")
    assert float(loss) == pytest.approx(-0.3125)
    assert float(recoil.recoil_critic_loss(*args, "chi2", initial_term=2.0)[0]) == pytest.approx(-0.3125 + 0.5 * 2.0)
    assert float(aux["implied_reward_expert"]) == pytest.approx(1.5)  # -mean(y_E)
    assert float(aux["implied_reward_suboptimal"]) == pytest.approx(-1.0)
    assert float(aux["ratio_expert"]) == pytest.approx(np.mean([max(0, -1 / 2 + 1), max(0, -2 / 2 + 1)]))
    # kl: f*(y) = exp(y - 1): 0.5 * mean(e^-2, e^-3) + 0.5 * e^0 - 0.5 * 1
    loss, _ = recoil.recoil_critic_loss(*args, "kl")
    assert float(loss) == pytest.approx(0.5 * np.mean([np.exp(-2), np.exp(-3)]))
    # beta = 1: the suboptimal rows drop out entirely
    loss, _ = recoil.recoil_critic_loss(*args[:4], 1.0, "chi2")
    assert float(loss) == pytest.approx(np.mean([-0.75, -1.0]))
    # f*_p: chi2's conjugate over ratios >= 0 is flat (-1) below y = -2
    loss, _ = recoil.recoil_critic_loss(jnp.array([4.0]), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), 1.0, "chi2",
                                        nonnegative=True)
    assert float(loss) == pytest.approx(-1.0)


def test_critic_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    q_e, t_e, q_s, t_s = (jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(4))

    def loss(q):
        return recoil.recoil_critic_loss(q[:5], t_e, q[5:], t_s, 0.3, "chi2")[0]

    q = jnp.concatenate([q_e, q_s])
    grad = jax.grad(loss)(q)
    # analytic: expert rows -beta f*'(y) / n; suboptimal rows -(1 - beta) (f*'(y) - 1) / n, f*'(y) = 1 + y / 2
    y_e, y_s = t_e - q_e, t_s - q_s
    expected = jnp.concatenate([-0.3 * (1 + y_e / 2) / 5, -0.7 * (y_s / 2) / 5])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- (b) the exact tabular dual

S, A, GAMMA, BETA = 4, 3, 0.9, 0.4


def _mdp(seed=0):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))  # [S, A, S]
    return P, np.full(S, 1.0 / S)


def _occupancy(P, p0, policy):
    """Normalised discounted occupancy d(s, a) = (1 - gamma) sum_t gamma^t Pr(s_t = s, a_t = a)."""
    P_pi = np.einsum("sa,sat->st", policy, P)
    d = (1 - GAMMA) * np.linalg.solve(np.eye(S) - GAMMA * P_pi.T, p0)
    return d[:, None] * policy


def _policies(seed=0):
    """A full-support expert, and a suboptimal policy that never takes actions 1 and 2 (no coverage)."""
    rng = np.random.default_rng(seed + 1)
    expert = rng.dirichlet(np.ones(A) * 2.0, size=S)
    suboptimal = np.zeros((S, A))
    suboptimal[:, 0] = 1.0
    return expert, suboptimal


def _dual(P, p0, d_expert, d_sub, divergence):
    """ReCOIL's dual J(Q, pi) with exact expectations: every (s, a) a row weighted by its occupancy."""

    def J(q_flat, policy):
        q = q_flat.reshape(S, A)
        P_, pol = jnp.asarray(P, q.dtype), policy.astype(q.dtype)
        next_q = GAMMA * jnp.einsum("sat,t->sa", P_, (pol * q).sum(axis=1))  # gamma E_{s', a' ~ pi} Q(s', a')
        initial = (1 - GAMMA) * (jnp.asarray(p0, q.dtype)[:, None] * pol * q).sum()
        rows = lambda x: x.reshape(-1)  # noqa: E731
        return recoil.recoil_critic_loss(
            rows(q), rows(next_q), rows(q), rows(next_q), BETA, divergence, initial_term=initial,
            expert_weights=jnp.asarray(rows(d_expert), q.dtype), suboptimal_weights=jnp.asarray(rows(d_sub), q.dtype),
        )[0]

    return J


def _minimise(J, n, *args):
    """min_q J(q, *args) by damped Newton in float64 (J is strictly convex here: quadratic for chi2)."""
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(a, jnp.float64) for a in args)
        value = jax.jit(J)
        newton = jax.jit(lambda q, *a: (jax.grad(J)(q, *a), jnp.linalg.solve(jax.hessian(J)(q, *a), jax.grad(J)(q, *a))))
        q = jnp.zeros(n, jnp.float64)
        for _ in range(100):
            grad, step = newton(q, *args)
            if jnp.abs(grad).max() < 1e-12:
                break
            t = 1.0
            while value(q - t * step, *args) > value(q, *args) and t > 1e-8:
                t /= 2
            q = q - t * step
        assert jnp.abs(grad).max() < 1e-9, f"Newton did not converge: |grad| = {jnp.abs(grad).max()}"
        return np.asarray(q, np.float64), float(value(q, *args))


def _divergence(name, d_agent_mix, d_expert_mix):
    x = d_agent_mix / d_expert_mix
    return float((d_expert_mix * (x - 1) ** 2).sum()) if name == "chi2" else float((d_agent_mix * np.log(x)).sum())


@pytest.mark.parametrize("divergence", ["chi2", "kl"])
def test_tabular_dual_value_is_minus_the_mixture_divergence(divergence):
    """Strong duality: min_Q J(Q; pi) = -D_f(beta d^pi + (1-beta) d^S || beta d^E + (1-beta) d^S) for every pi,
    and the minimiser's (f*)'(y) is the mixtures' density ratio (the dual variables are the primal's ratio)."""
    P, p0 = _mdp()
    expert, sub = _policies()
    d_e, d_s = _occupancy(P, p0, expert), _occupancy(P, p0, sub)
    mix_e = BETA * d_e + (1 - BETA) * d_s
    J = _dual(P, p0, d_e, d_s, divergence)
    rng = np.random.default_rng(5)
    for _ in range(3):
        pi = rng.dirichlet(np.ones(A), size=S)
        mix_pi = BETA * _occupancy(P, p0, pi) + (1 - BETA) * d_s
        q, value = _minimise(J, S * A, pi)
        assert value == pytest.approx(-_divergence(divergence, mix_pi, mix_e), abs=1e-8)
        q = q.reshape(S, A)
        y = GAMMA * np.einsum("sat,t->sa", P, (pi * q).sum(axis=1)) - q
        ratio = y / 2 + 1 if divergence == "chi2" else np.exp(y - 1)  # (f*)'(y)
        np.testing.assert_allclose(ratio, mix_pi / mix_e, rtol=1e-6)


def test_tabular_max_over_policies_is_the_expert_despite_no_coverage():
    """max_pi min_Q J = 0, attained by the expert, though d^S never takes the expert's actions 1 and 2:
    random policies, and the expert perturbed in any one state, score strictly less."""
    P, p0 = _mdp(1)
    expert, sub = _policies(1)
    d_e, d_s = _occupancy(P, p0, expert), _occupancy(P, p0, sub)
    assert d_s[:, 1:].sum() == 0 and d_e[:, 1:].min() > 0  # the suboptimal data does not cover the expert
    J = _dual(P, p0, d_e, d_s, "chi2")

    def value(pi):
        return _minimise(J, S * A, pi)[1]

    assert value(expert) == pytest.approx(0.0, abs=1e-10)
    rng = np.random.default_rng(2)
    for _ in range(3):
        assert value(rng.dirichlet(np.ones(A), size=S)) < -1e-4
    for s in range(S):
        perturbed = expert.copy()
        perturbed[s] = 0.9 * expert[s] + 0.1 * np.eye(A)[0]
        assert value(perturbed) < -1e-8


def test_semi_gradient_critic_fixed_point_implies_the_discriminator_reward():
    """With the target gamma V(s') held fixed, the per-(s, a) minimiser has (f*)'(y) = (1-beta) d^S / d^mix,
    so for chi2 the implied reward Q - gamma V' = 2 beta d^E / (beta d^E + (1 - beta) d^S): 2 on pairs only the
    expert takes, 0 on pairs only the suboptimal data takes (no discriminator is trained)."""
    rng = np.random.default_rng(3)
    d_e = rng.dirichlet(np.ones(6))
    d_e[0] = 0.0
    d_e /= d_e.sum()
    d_s = rng.dirichlet(np.ones(6))
    d_s[1] = 0.0
    d_s /= d_s.sum()
    target = jnp.asarray(rng.normal(size=6))

    def loss(q, target, d_e, d_s):
        return recoil.recoil_critic_loss(q, target, q, target, BETA, "chi2", expert_weights=d_e,
                                         suboptimal_weights=d_s)[0]

    q, _ = _minimise(loss, 6, target, d_e, d_s)
    reward = q - np.asarray(target)
    np.testing.assert_allclose(reward, 2 * BETA * d_e / (BETA * d_e + (1 - BETA) * d_s), atol=1e-7)
    assert reward[0] == pytest.approx(0.0, abs=1e-7) and reward[1] == pytest.approx(2.0)


# ---------------------------------------------------------------- (c) the agent

PENDULUM = "gymnax/Pendulum-v1"


def _transitions(n, seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    theta = jax.random.uniform(k1, (n,), minval=-np.pi, maxval=np.pi)
    obs = jnp.stack([jnp.cos(theta), jnp.sin(theta), jnp.zeros(n)], axis=1)
    return offline.Transitions(obs=obs, action=jax.random.uniform(k2, (n, 1), minval=-1.0, maxval=1.0),
                               reward=jnp.zeros(n), next_obs=obs, terminated=jnp.zeros(n, bool))


TINY = recoil.ReCOILConfig(env=PENDULUM, num_updates=3, gradient_steps=2, batch_size=8, hidden_sizes=(16, 16),
                           eval_episodes=2)


@pytest.mark.parametrize("method", recoil.METHODS)
def test_agent_runs_under_jit_and_vmap_with_finite_metrics(method):
    expert, sub = _transitions(20, 0), _transitions(100, 1)
    trainer = recoil.make_train(dataclasses.replace(TINY, method=method), expert, sub)
    hp = broadcast_hparams(recoil.ReCOILHParams(), 2)
    hp = hp.replace(beta=jnp.array([0.2, 0.8]))  # beta is traced: a sweep is one vmap
    key = jax.random.PRNGKey(0)
    state, metrics = jax.jit(jax.vmap(trainer))(jnp.stack([key, key]), hp)  # the same seed, two betas
    actor = jax.tree.leaves(state.actor_params)[0]
    if method == "recoil":  # beta changes ReCOIL's update, not the BC baselines' (their weights are fixed)
        assert not np.allclose(actor[0], actor[1])
    else:
        np.testing.assert_array_equal(actor[0], actor[1])
    assert int(state.grad_steps[0]) == 6
    for name, value in metrics.items():
        assert value.shape == (2, 3), name
        assert np.isfinite(np.asarray(value)).all(), name
    if method == "recoil":
        assert {"critic/critic_loss", "loss/value", "awr_weight_expert"} <= set(metrics)
        q = jax.vmap(trainer.q_values, in_axes=(0, None, None))(state, expert.obs, expert.action)
        assert q.shape == (2, 2, 20)
    ev = jax.jit(jax.vmap(trainer.evaluate))(state, jax.random.split(jax.random.PRNGKey(1), 2))
    assert ev["return"].shape == (2, 2) and np.isfinite(np.asarray(ev["return"])).all()


def test_actor_rate_decays_to_zero_over_all_gradient_steps():
    # TINY: 3 updates x 2 gradient steps. The cosine runs over all 6 steps: the actor still moves in the
    # last update, and a 4th update (schedule spent) leaves it where it is while the critic goes on.
    trainer = recoil.make_train(TINY, _transitions(20, 0), _transitions(100, 1))
    state = trainer.init(jax.random.PRNGKey(0), recoil.ReCOILHParams())
    update = jax.jit(trainer.update)
    for _ in range(2):
        state, _ = update(state)
    last, _ = update(state)
    after, _ = update(last)
    moved = lambda a, b: not all(np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert moved(state.actor_params, last.actor_params)
    assert not moved(last.actor_params, after.actor_params)
    assert moved(last.critic_params, after.critic_params)


def test_init_from_takes_other_data_of_the_same_shapes():
    expert, sub = _transitions(20, 0), _transitions(100, 1)
    trainer = recoil.make_train(TINY, expert, sub)
    state = trainer.init_from(jax.random.PRNGKey(0), recoil.ReCOILHParams(), _transitions(20, 5), sub)
    np.testing.assert_array_equal(state.expert.obs, _transitions(20, 5).obs)
    with pytest.raises(ConfigError, match=r"init_from: expert.obs must have shape \(20, 3\) as in make_train"):
        trainer.init_from(jax.random.PRNGKey(0), recoil.ReCOILHParams(), _transitions(21, 5), sub)


# ---------------------------------------------------------------- (d) errors


@pytest.mark.parametrize("changes,match", [
    ({"method": "gail"}, r"ReCOILConfig.method: expected one of \('recoil', 'bc_all', 'bc_expert'\), got 'gail'"),
    ({"divergence": "tv"}, r"ReCOILConfig.divergence: expected one of \('chi2', 'kl'\), got 'tv'"),
    ({"implicit": "max"}, r"ReCOILConfig.implicit: expected one of \('expectile', 'gumbel'\), got 'max'"),
    ({"batch_size": 0}, r"ReCOILConfig.batch_size: expected a positive number, got 0"),
    ({"activation": "sigmoid"}, r"ReCOILConfig.activation: expected one of .*got 'sigmoid'"),
    ({"hidden_sizes": ()}, r"ReCOILConfig.hidden_sizes: expected positive layer widths"),
])  # fmt: skip
def test_bad_config_raises_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        recoil.ReCOILConfig(**changes)


@pytest.mark.parametrize("changes,match", [
    ({"beta": 0.0}, r"ReCOILHParams.beta: expected a number in \(0, 1\], got 0.0"),
    ({"beta": np.array([0.5, 1.5])}, r"ReCOILHParams.beta: expected a number in \(0, 1\], got \[0.5, 1.5\]"),
    ({"gamma": 1.0}, r"ReCOILHParams.gamma: expected a number in \[0, 1\), got 1.0"),
    ({"expectile": 1.0}, r"ReCOILHParams.expectile: expected a number in \(0, 1\), got 1.0"),
    ({"critic_lr": -1.0}, r"ReCOILHParams.critic_lr: expected a positive number"),
])  # fmt: skip
def test_bad_hparams_raise_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        recoil.check_hparams(recoil.ReCOILHParams(**changes))


def test_data_and_env_errors_name_the_field():
    expert, sub = _transitions(20, 0), _transitions(100, 1)
    with pytest.raises(ConfigError, match=r"ReCOILConfig.env = 'gymnax/CartPole-v1' has discrete actions"):
        recoil.make_train(dataclasses.replace(TINY, env="gymnax/CartPole-v1"), expert, sub)
    with pytest.raises(DatasetError, match=r"expert: field 'obs' has rows of shape \(2,\), the env expects \(3,\)"):
        recoil.make_train(TINY, expert.replace(obs=expert.obs[:, :2]), sub)
    with pytest.raises(DatasetError, match=r"suboptimal: field 'action' is \[1.5\] at row 4"):
        recoil.make_train(TINY, expert, sub.replace(action=sub.action.at[4].set(1.5)))
    with pytest.raises(DatasetError, match=r"suboptimal: field 'next_obs' has shape \(99, 3\), expected \(100, 3\)"):
        recoil.make_train(TINY, expert, sub.replace(next_obs=sub.next_obs[:99]))
    with pytest.raises(ConfigError, match="divergence: expected one of"):
        recoil.recoil_critic_loss(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), 0.5, "tv")


# ---------------------------------------------------------------- (e) the experiment


def _random_demos(path):
    from experiments.make_dataset import make

    data = make("random", PENDULUM, jax.random.PRNGKey(3), steps=200, num_envs=1)
    meta = dict(data.metadata, expert_return=-150.0, random_return=-1250.0)
    dataset_lib.save(dataclasses.replace(data, metadata=meta), str(path))


@pytest.mark.integration
def test_quick_cli_writes_every_output(tmp_path, run_experiment):
    _random_demos(tmp_path / "demos")
    _, result = run_experiment("recoil", "--quick", "--demos", str(tmp_path / "demos"), "--random-episodes", "2",
                               "--methods", "recoil,bc_all",
                               files=("learning_curves.png", "demos.npz", "suboptimal.npz", "recoil/metrics.jsonl",
                                      "bc_all/metrics.jsonl"))
    assert result["random_episodes"] == 2 and result["seeds"] == 2 and isinstance(result["claim"]["holds"], bool)
    r = result["methods"]["recoil"]
    assert len(r["final_score_per_seed"]) == 2
    assert r["final_score"]["mean"] == pytest.approx(np.mean(r["final_score_per_seed"]))
    expected = dataset_lib.normalized_score(r["final_return_per_seed"], -1250.0, -150.0)
    np.testing.assert_allclose(r["final_score_per_seed"], expected)


def test_cli_rejects_demonstrations_without_normalisation_metadata(tmp_path):
    from experiments.__main__ import main as cli
    from experiments.make_dataset import make

    dataset_lib.save(make("random", PENDULUM, jax.random.PRNGKey(3), steps=200, num_envs=1), str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="metadata has no 'expert_return'"):
        cli(["recoil", "--quick", "--demos", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--no-progress"])


@pytest.mark.slow
def test_full_experiment_claim(run_experiment):
    """The reproduction at the recorded seed (306 s measured on one idle core): ReCOIL 83.6 >= 80, BC-all 0.2 <= 50.
    Not robust: the replicates with --seed 1 and 2 (experiments/RESULTS.md) give ReCOIL 55.2 and 51.7, and the
    recorded seed gives 72.6 on an AVX-512 Xeon (recorded on an AVX2 AMD EPYC), so this test fails there."""
    claim = run_experiment("recoil")[1]["claim"]
    assert claim["bc_all_score"] <= claim["bc_all_max"], claim
    assert claim["holds"], claim
