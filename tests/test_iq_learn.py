"""IQ-Learn: the loss's exact tabular solution, the agents under jit/vmap, learning, the CLI and errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
from envs import wrappers
from experiments.__main__ import main as cli
from rljax.agents import iq_learn
from rljax.core import dataset as dataset_lib
from rljax.core import rollout as rollout_lib
from rljax.core.config import ConfigError, broadcast_hparams
from rljax.core.dataset import DatasetError
from rljax.losses.imitation import iq_learn_loss

# ---------------------------------------------------------------- (a) tabular exactness

S, A, GAMMA, TEMP = 4, 3, 0.9, 0.7


def _mdp(seed=0):
    """A random stochastic MDP: P [S, A, S], reward [S, A], uniform initial states."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    reward = rng.normal(size=(S, A))
    return P, reward, np.full(S, 1.0 / S)


def _soft_optimal_q(P, reward):
    """Soft value iteration at temperature TEMP: Q = r + gamma P V, V = TEMP logsumexp(Q / TEMP)."""
    q = np.zeros((S, A))
    for _ in range(3000):
        v = TEMP * np.log(np.exp(q / TEMP).sum(axis=1))
        q = reward + GAMMA * P @ v
    return q


def _occupancy(P, p0, policy):
    """Normalised discounted occupancy rho(s, a) = (1 - gamma) sum_t gamma^t Pr(s_t = s, a_t = a)."""
    P_pi = np.einsum("sa,sat->st", policy, P)
    d = (1 - GAMMA) * np.linalg.solve(np.eye(S) - GAMMA * P_pi.T, p0)
    return d[:, None] * policy


def _softmax(q):
    z = np.exp((q - q.max(axis=1, keepdims=True)) / TEMP)
    return z / z.sum(axis=1, keepdims=True)


def _population_loss(P, p0, rho, value_term, alpha):
    """The IQ-Learn loss under the exact expert occupancy: every (s, a) row weighted by rho(s, a).

    Each row is one call of ``iq_learn_loss`` on a batch of one (its masked means
    are then that row's values), so the weighted sum is the expectation over rho;
    V(s') enters as its exact expectation sum_s' P(s'|s, a) V(s'); p0 must be uniform (initial_v is averaged).
    """
    assert np.allclose(p0, 1.0 / S)

    def loss(q):
        P_, rho_ = jnp.asarray(P, q.dtype), jnp.asarray(rho, q.dtype)  # float64 under enable_x64
        v = TEMP * jax.nn.logsumexp(q / TEMP, axis=1)  # [S]
        rows = lambda x: x.reshape(S * A, 1)  # noqa: E731
        per_row = jax.vmap(
            lambda q_i, v_i, next_v_i: iq_learn_loss(
                q_i, v_i, next_v_i, jnp.zeros(1, bool), jnp.ones(1, bool), gamma=GAMMA, alpha=alpha,
                value_term=value_term, initial_v=v if value_term == "v0" else None)[0]
        )(rows(q), rows(jnp.broadcast_to(v[:, None], (S, A))), rows(P_ @ v))
        return (rho_.reshape(-1) * per_row).sum()  # uniform p0: initial_v's mean is E_{s0}[V(s0)]

    return loss


def _minimise(loss, q0):
    """L-BFGS in float64 (the tolerances below are far under float32's reach on this flat objective)."""
    with jax.enable_x64(True):
        return _lbfgs(loss, jnp.asarray(q0, jnp.float64))


def _lbfgs(loss, q0):
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def step(q, state):
        value, grad = value_and_grad(q, state=state)
        updates, state = solver.update(grad, state, q, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(q, updates), state, jnp.abs(grad).max()

    q, state = q0, solver.init(q0)
    for _ in range(200):  # stop at convergence: the line search is ill-posed at a zero gradient
        q, state, grad_max = step(q, state)
        if grad_max < 1e-11:
            break
    assert grad_max < 1e-9, f"L-BFGS did not converge: |grad| = {grad_max}"
    return np.asarray(q, np.float64)


def _shaping_residual(P, reward, recovered):
    """min_phi || recovered - reward - (gamma P phi - phi) || over potentials phi [S] (least squares)."""
    basis = (GAMMA * P - np.eye(S)[:, None, :]).reshape(S * A, S)  # (gamma P phi - phi)(s, a) = basis @ phi
    phi, *_ = np.linalg.lstsq(basis, (recovered - reward).reshape(-1), rcond=None)
    return np.abs(basis @ phi - (recovered - reward).reshape(-1)).max(), phi


def test_tabular_without_regulariser_recovers_expert_policy_and_reward_up_to_shaping():
    """Paper's Q <-> reward bijection (phi(x) = x, i.e. alpha -> inf): the minimiser's softmax policy is the
    soft-optimal expert, and r_Q = Q - gamma P V_Q is the true reward plus potential shaping."""
    P, reward, p0 = _mdp()
    expert = _softmax(_soft_optimal_q(P, reward))
    rho = _occupancy(P, p0, expert)
    q0 = np.random.default_rng(1).normal(size=(S, A))
    q = _minimise(_population_loss(P, p0, rho, "v0", np.inf), q0)

    np.testing.assert_allclose(_softmax(q), expert, atol=1e-4)
    v = TEMP * np.log(np.exp(q / TEMP).sum(axis=1))
    recovered = q - GAMMA * P @ v
    residual, phi = _shaping_residual(P, reward, recovered)
    assert residual < 1e-4
    assert np.abs(recovered - reward).max() > 0.1  # not trivially the true reward: a real potential was removed
    assert np.abs(phi).max() > 0.1


def test_tabular_chi2_minimiser_satisfies_the_saddle_point_condition():
    """With the chi-squared regulariser the policy is *not* the expert's: at the optimum
    rho_E(s, a) (1 - r_Q / (2 alpha)) = rho_piQ(s, a) for every (s, a) (the first-order condition of
    max_r E_E[r - r^2 / (4 alpha)] - max_pi (E_pi[r] + H(pi)))."""
    P, reward, p0 = _mdp(seed=2)
    alpha = 0.5
    expert = _softmax(_soft_optimal_q(P, reward))
    rho_expert = _occupancy(P, p0, expert)
    q0 = np.zeros((S, A))
    q = _minimise(_population_loss(P, p0, rho_expert, "v0", alpha), q0)

    policy = _softmax(q)
    v = TEMP * np.log(np.exp(q / TEMP).sum(axis=1))
    recovered = q - GAMMA * P @ v
    np.testing.assert_allclose(rho_expert * (1 - recovered / (2 * alpha)), _occupancy(P, p0, policy), atol=2e-5)
    assert np.abs(policy - expert).max() > 1e-3  # the regulariser moves the policy off the expert's


@pytest.mark.parametrize("alpha", [0.5, np.inf])
def test_telescoped_value_term_equals_initial_state_term_under_expert_occupancy(alpha):
    """E_rho[V(s) - gamma V(s')] = (1 - gamma) E_p0[V(s0)] for rho the expert's occupancy: the "expert" and
    "v0" losses agree in value and gradient at any Q."""
    P, reward, p0 = _mdp(seed=3)
    rho = _occupancy(P, p0, _softmax(_soft_optimal_q(P, reward)))
    q = jnp.asarray(np.random.default_rng(4).normal(size=(S, A)), jnp.float32)
    v0_loss, expert_loss = _population_loss(P, p0, rho, "v0", alpha), _population_loss(P, p0, rho, "expert", alpha)
    np.testing.assert_allclose(v0_loss(q), expert_loss(q), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.grad(v0_loss)(q), jax.grad(expert_loss)(q), atol=1e-5)


# ---------------------------------------------------------------- demonstrations


def _rollout_demos(env_name, steps, policy, key):
    """Demonstrations from one env run of ``policy(obs [1, ...], key)`` (complete or not)."""
    env, params = envs.make(env_name)
    carry = rollout_lib.reset(env, params, key, 1)
    _, traj = rollout_lib.rollout(env, params, lambda o, k: (policy(o, k), {}), carry, key, steps)
    traj = jax.device_get(traj)
    return iq_learn.Demonstrations(
        obs=jnp.asarray(traj.obs[:, 0]), action=jnp.asarray(traj.action[:, 0]),
        next_obs=jnp.asarray(traj.next_obs[:, 0]), terminated=jnp.asarray(traj.terminated[:, 0]),
    )


def _random_policy(env_name):
    env, params = envs.make(env_name)
    space = env.action_space(params)
    return lambda obs, key: jax.vmap(space.sample)(jax.random.split(key, obs.shape[0]))


def cartpole_controller(obs, key):
    """A linear controller that balances CartPole to the 500-step limit (a stand-in expert)."""
    return (obs @ jnp.array([0.1, 0.5, 3.0, 1.0]) > 0).astype(jnp.int32)


def test_demonstrations_from_dataset_selects_episodes_and_subsamples():
    n = 9  # episodes of 5, 3 and 1 rows
    ids = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2], np.int32)
    obs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    next_obs = obs + 1
    next_obs[[4, 7]] = -1  # episode ends (no chain to the next row)
    done = np.zeros(n, bool)
    done[[4, 7, 8]] = True
    data = dataset_lib.Dataset(obs=obs, action=np.arange(n, dtype=np.int32) % 2, reward=np.ones(n, np.float32),
                               next_obs=next_obs, terminated=done, truncated=np.zeros(n, bool), episode_id=ids,
                               metadata={})
    dataset_lib.validate(data)
    demos = iq_learn.Demonstrations.from_dataset(data, episodes=2, subsample=2)
    np.testing.assert_array_equal(demos.obs[:, 0], [0, 2, 4, 5, 7])  # rows 0, 2, 4 of episode 0; 0, 2 of episode 1
    np.testing.assert_array_equal(demos.next_obs[:, 0], [1, 3, -1, 6, -1])
    np.testing.assert_array_equal(demos.terminated, [False, False, True, False, True])
    assert demos.action.dtype == jnp.int32
    assert iq_learn.Demonstrations.from_dataset(data).num_transitions == n
    with pytest.raises(ConfigError, match="episodes: expected 1 .. 3"):
        iq_learn.Demonstrations.from_dataset(data, episodes=4)


# ---------------------------------------------------------------- (b) agents under jit and vmap


def _run_vmapped(trainer, hparams, seeds=2):
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    states, metrics = jax.jit(jax.vmap(trainer))(keys, broadcast_hparams(hparams, seeds))
    evals = jax.jit(jax.vmap(trainer.evaluate))(states, keys)
    for name, value in metrics.items():
        assert value.shape[:2] == (seeds, trainer.num_updates), name
        assert np.isfinite(np.asarray(value)).all(), name
    assert np.isfinite(np.asarray(evals["return"])).all()
    return states, metrics


@pytest.mark.parametrize("online", [False, True])
def test_discrete_agent_runs_under_jit_and_vmap(online):
    demos = _rollout_demos("gymnax/CartPole-v1", 40, cartpole_controller, jax.random.PRNGKey(1))
    config = iq_learn.IQLearnConfig(
        online=online, value_term="all" if online else "expert", regularize_on="all" if online else "expert",
        num_updates=6, gradient_steps=2, batch_size=8, hidden_sizes=(16, 16), learning_starts=4, buffer_size=32,
        use_target=online, target_update_every=2, eval_episodes=2,
    )  # fmt: skip
    trainer = iq_learn.make_train(config, demos)
    states, metrics = _run_vmapped(trainer, iq_learn.IQLearnHParams(temperature=0.1, tau=0.5))
    # Offline every update learns; online the first 3 updates only collect (learning_starts = 4 env steps).
    assert int(states.grad_steps[0]) == (3 if online else 6) * config.gradient_steps
    if online:
        assert int(states.env_steps[0]) == 6 and int(states.replay.size[0, 0]) == 6
        assert not np.allclose(jax.tree.leaves(states.target_critic_params)[0], jax.tree.leaves(states.critic_params)[0])

    # V = T logsumexp(Q / T) over all actions, and r = Q(s, a) - gamma (1 - terminated) V(s').
    state = jax.tree.map(lambda x: x[0], states)
    obs, next_obs = demos.obs[:5], demos.next_obs[:5]
    q_all = jnp.stack([trainer.q_values(state, obs, jnp.full((5,), a, jnp.int32))[0] for a in range(2)], axis=-1)
    key = jax.random.PRNGKey(2)
    np.testing.assert_allclose(trainer.soft_value(state, obs, key), 0.1 * jax.nn.logsumexp(q_all / 0.1, axis=-1),
                               rtol=1e-5)
    terminated = jnp.array([False, True, False, True, False])
    reward = trainer.recovered_reward(state, obs, demos.action[:5], next_obs, terminated, key)
    expected = (q_all[jnp.arange(5), demos.action[:5]]
                - 0.99 * (1 - terminated) * trainer.soft_value(state, next_obs, key))
    np.testing.assert_allclose(reward, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(trainer.act(state, obs, key), jnp.argmax(q_all, axis=-1))


@pytest.mark.parametrize("online,value_term", [(True, "all"), pytest.param(False, "v0", marks=pytest.mark.slow)])
def test_continuous_agent_runs_under_jit_and_vmap(online, value_term):
    demos = _rollout_demos("gymnax/Pendulum-v1", 30, _random_policy("gymnax/Pendulum-v1"), jax.random.PRNGKey(3))
    config = iq_learn.IQLearnConfig(
        env="gymnax/Pendulum-v1", online=online, value_term=value_term, regularize_on="all" if online else "expert",
        num_updates=5, batch_size=8, hidden_sizes=(16, 16), activation="relu", learning_starts=2, buffer_size=32,
        use_target=not online, eval_episodes=1,
    )  # fmt: skip
    trainer = iq_learn.make_train(config, demos)
    states, metrics = _run_vmapped(trainer, iq_learn.IQLearnHParams(critic_lr=1e-3, actor_lr=1e-3, temperature=0.1))
    assert "actor_loss" in metrics and "entropy" in metrics
    # Expert actions live in the env's box [-2, 2]; the agent sees them rescaled onto [-1, 1].
    box = envs.make("gymnax/Pendulum-v1")[0].action_space(envs.make("gymnax/Pendulum-v1")[1])
    np.testing.assert_allclose(states.expert.action[0], wrappers.from_box(demos.action, box), rtol=1e-6)
    assert np.abs(np.asarray(states.expert.action)).max() <= 1.0 + 1e-6
    state = jax.tree.map(lambda x: x[0], states)
    reward = trainer.recovered_reward(state, demos.obs[:4], states.expert.action[0, :4], demos.next_obs[:4],
                                      jnp.ones(4, bool), jax.random.PRNGKey(0))
    np.testing.assert_allclose(reward, trainer.q_values(state, demos.obs[:4], states.expert.action[0, :4]).min(axis=0),
                               rtol=1e-6)  # terminated: r = Q(s, a)


def test_init_from_trains_other_demonstrations_of_the_same_shapes():
    key = jax.random.PRNGKey(4)
    demos = _rollout_demos("gymnax/CartPole-v1", 20, cartpole_controller, key)
    other = _rollout_demos("gymnax/CartPole-v1", 20, _random_policy("gymnax/CartPole-v1"), key)
    config = iq_learn.IQLearnConfig(num_updates=3, batch_size=4, hidden_sizes=(8,), eval_episodes=1)
    trainer = iq_learn.make_train(config, demos)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), demos, other)
    hp = broadcast_hparams(iq_learn.IQLearnHParams(), 2)
    states = jax.jit(jax.vmap(trainer.init_from))(jax.random.split(key, 2), hp, stacked)
    np.testing.assert_array_equal(states.expert.action, stacked.action)
    states, _ = jax.jit(jax.vmap(lambda s: trainer.run_updates(s, 3)))(states)
    assert int(states.grad_steps[1]) == 3
    with pytest.raises(ConfigError, match=r"demos.obs must have shape \(20, 4\)"):
        trainer.init_from(key, iq_learn.IQLearnHParams(), jax.tree.map(lambda x: x[:10], other))


# ---------------------------------------------------------------- (d) the experiment


@pytest.mark.integration
def test_quick_cli_run_writes_result_and_plot(tmp_path):
    out = tmp_path / "run"
    assert cli(["iqlearn", "--quick", "--seeds", "2", "--out", str(out), "--no-progress"]) == 0
    for name in ("config.json", "metrics.jsonl", "result.json", "curve.png", "demos.npz", "demos.json", "checkpoints"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert result["finished"] and result["seeds"] == 2 and result["variant"] == "offline"
    assert len(result["final_eval_return_per_seed"]) == 2
    r = result["final_eval_return"]
    assert r["n"] == 2 and r["ci95_low"] <= r["mean"] <= r["ci95_high"]
    assert r["mean"] == pytest.approx(np.mean(result["final_eval_return_per_seed"]))
    saved = dataset_lib.load(str(out / "demos"))
    assert result["demo_returns"] == pytest.approx(saved.episode_returns[:1].tolist())
    assert result["gradient_steps_per_seed"] == 40 and isinstance(result["claim"]["passed"], bool)


def test_cli_rejects_demonstrations_of_another_env(tmp_path):
    env, params = envs.make("gymnax/Pendulum-v1")
    carry = rollout_lib.reset(env, params, jax.random.PRNGKey(6), 1)
    _, traj = rollout_lib.rollout(env, params, lambda o, k: (_random_policy("gymnax/Pendulum-v1")(o, k), {}), carry,
                                  jax.random.PRNGKey(6), 200)
    data = dataset_lib.from_trajectory(jax.device_get(traj), {"env": "gymnax/Pendulum-v1"})
    dataset_lib.save(data, str(tmp_path / "pendulum"))
    with pytest.raises(ConfigError, match="recorded on 'gymnax/Pendulum-v1', not on --env 'gymnax/CartPole-v1'"):
        cli(["iqlearn", "--quick", "--demos", str(tmp_path / "pendulum"), "--out", str(tmp_path / "run"),
             "--no-progress"])


# ---------------------------------------------------------------- (e) errors


@pytest.mark.parametrize("changes,match", [
    ({"value_term": "policy"}, r"IQLearnConfig.value_term: expected one of \('expert', 'all', 'v0'\), got 'policy'"),
    ({"regularize_on": "mix"}, r"IQLearnConfig.regularize_on: expected one of \('expert', 'all'\), got 'mix'"),
    ({"value_term": "all"}, r"IQLearnConfig.value_term = 'all' needs learner transitions: set online=True"),
    ({"regularize_on": "all"}, r"IQLearnConfig.regularize_on = 'all' needs learner transitions"),
    ({"num_updates": 0}, r"IQLearnConfig.num_updates: expected a positive number, got 0"),
    ({"batch_size": -1}, r"IQLearnConfig.batch_size: expected a positive number, got -1"),
    ({"activation": "sigmoid"}, r"IQLearnConfig.activation: expected one of .*got 'sigmoid'"),
    ({"learning_starts": -5}, r"IQLearnConfig.learning_starts: expected a number >= 0, got -5"),
    ({"online": True, "num_envs": 4, "steps_per_update": 8, "buffer_size": 16},
     r"IQLearnConfig.buffer_size = 16 cannot hold one update's 32 transitions"),
])  # fmt: skip
def test_bad_config_raises_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        iq_learn.IQLearnConfig(**changes)


@pytest.mark.parametrize("changes,match", [
    ({"temperature": 0.0}, r"IQLearnHParams.temperature: expected a positive number, got 0.0"),
    ({"gamma": 1.0}, r"IQLearnHParams.gamma: expected a number in \[0, 1\), got 1.0"),
    ({"tau": 0.0}, r"IQLearnHParams.tau: expected a number in \(0, 1\], got 0.0"),
    ({"alpha": np.array([0.5, -1.0])}, r"IQLearnHParams.alpha: expected a positive number, got \[0.5, -1.0\]"),
])  # fmt: skip
def test_bad_hparams_raise_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match):
        iq_learn.check_hparams(iq_learn.IQLearnHParams(**changes))


def test_demonstrations_that_do_not_fit_the_env_raise_naming_the_field():
    demos = _rollout_demos("gymnax/CartPole-v1", 10, cartpole_controller, jax.random.PRNGKey(7))
    config = iq_learn.IQLearnConfig(num_updates=1)
    with pytest.raises(DatasetError, match=r"demos: field 'obs' has rows of shape \(3,\), the env expects \(4,\)"):
        iq_learn.make_train(config, demos.replace(obs=demos.obs[:, :3]))
    with pytest.raises(DatasetError, match=r"demos: field 'action' is 2 at row 3; the env's actions are 0..1"):
        iq_learn.make_train(config, demos.replace(action=demos.action.at[3].set(2)))
    with pytest.raises(DatasetError, match="demos: field 'action' has dtype float32 .* expected integer rows"):
        iq_learn.make_train(config, demos.replace(action=demos.action.astype(jnp.float32)))
    with pytest.raises(DatasetError, match="demos: field 'terminated': expected a bool array"):
        iq_learn.make_train(config, demos.replace(terminated=demos.terminated.astype(jnp.int32)))


@pytest.mark.slow
def test_quick_cli_on_brax_hopper(tmp_path):
    # The --gpu path's env at smoke-test size (about 4 minutes on one core, most of it compiling brax): online
    # IQ-Learn with the SAC agent, imitating one whole demonstration of a briefly trained SAC expert.
    out = tmp_path / "run"
    assert cli(["iqlearn", "--quick", "--env", "brax/hopper", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["env"] == "brax/hopper" and result["variant"] == "online" and result["subsample"] == 1
    assert result["demo_episodes"] == 1 and 0 < result["demo_transitions"] <= 1000  # hopper's time limit
    demos = dataset_lib.load(str(out / "demos"))
    assert demos.obs.shape[1:] == (11,) and demos.action.shape[1:] == (3,)  # hopper's spaces
    assert demos.num_transitions == result["demo_transitions"]
    assert result["env_steps_per_seed"] == result["gradient_steps_per_seed"] > 0  # one gradient step per env step
    assert np.isfinite(result["final_eval_return_per_seed"]).all()


# ---------------------------------------------------------------- the full experiment


@pytest.mark.slow
def test_full_cartpole_run_meets_the_claim(tmp_path):
    # The recorded seed (0), the claim's setting (the demonstration subsampled x20, 25 transitions). Not robust:
    # other experiment seeds gave 435.6 (--seed 1) and 58.3 (--seed 2). Recorded on an AVX2 AMD EPYC (480.4); on
    # AVX-512 machines (a Xeon, an AMD EPYC) XLA rounds differently, the expert differs, and this seed gives 301.4,
    # so this test fails there; with 20 seeds, experiment seeds 0, 1, 2 give 239.9, 48.8, 25.1 there
    # (experiments/RESULTS.md, IQ-Learn on CartPole).
    out = tmp_path / "run"
    assert cli(["iqlearn", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["seeds"] == 5 and result["demo_transitions"] == 25 and result["demo_returns"] == [500.0]
    assert result["claim"]["passed"], result["final_eval_return"]


@pytest.mark.slow
def test_full_cartpole_run_imitates_the_whole_demonstration(tmp_path):
    # The same run with the whole demonstration (500 transitions): 500 in 15 of 15 runs on each of an AVX2 and an
    # AVX-512 machine, and in 60 of 60 with 20 seeds on the AVX-512 one.
    out = tmp_path / "run"
    assert cli(["iqlearn", "--subsample", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["seeds"] == 5 and result["demo_transitions"] == 500 and result["demo_returns"] == [500.0]
    assert result["claim"]["passed"], result["final_eval_return"]
