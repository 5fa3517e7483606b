"""MAMQL: the tabular QRE experts, shaping canonicalisation, the agent and its baselines, the experiment."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.multiagent as ma
from experiments.__main__ import main as cli
from rljax.agents import mamql
from rljax.core import tabular
from rljax.core.config import ConfigError

GAMMA, LAM = 0.9, 10.0


@pytest.fixture(scope="module")
def small():
    """3x3 Gems with two gems: 4 * 81 = 324 joint states, and its logit QRE."""
    env, params = ma.make("multiagent/gems", size=3, start_cells=((0, 0), (2, 2)), gem_cells=((0, 2), (2, 0)),
                          gem_values=((1.0, -0.5), (0.5, 1.0)), max_steps_in_episode=10)
    game = env.tabular()
    # Undamped iteration cycles on this layout (see test_qre_is_a_fixed_point); damping 0.3 converges.
    qre = tabular.marginal_soft_q_iteration(game.next_state, game.rewards, game.terminal, gamma=GAMMA, lam=LAM,
                                            damping=0.3, tol=2e-6)
    return env, params, game, qre


def soft_value_iteration(P, R, terminal, gamma, lam, iters=3000):
    """Independent numpy reference: single-agent soft VI with dense P [S, A, S'] (float64)."""
    V = np.zeros(P.shape[0])
    for _ in range(iters):
        Q = R + gamma * P @ np.where(terminal, 0.0, V)
        V = np.where(terminal, 0.0, np.log(np.exp(lam * (Q - Q.max(1, keepdims=True))).sum(1)) / lam + Q.max(1))
    return Q


def random_mdp(seed, S=12, A=3, fanout=2):
    rng = np.random.default_rng(seed)
    next_idx = rng.integers(0, S, (S, A, fanout))
    probs = rng.dirichlet(np.ones(fanout), (S, A))
    terminal = np.zeros(S, bool)
    terminal[-1] = True
    next_idx[-1] = S - 1
    return rng, next_idx, probs, terminal


# ------------------------------------------------------------------ QRE experts


def test_qre_is_a_fixed_point(small):
    _, _, game, qre = small
    assert float(qre.residual) < 5e-6 and int(qre.iterations) < 10_000
    again = tabular.marginal_soft_q_operator(qre.qbar, jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                             jnp.asarray(game.terminal), GAMMA, LAM)
    np.testing.assert_allclose(again, qre.qbar, atol=1e-5)
    np.testing.assert_allclose(qre.policies.sum(-1), 1.0, atol=1e-6)
    # Several agents: T need not contract. Undamped, it cycles here, and the residual says so.
    undamped = tabular.marginal_soft_q_iteration(game.next_state, game.rewards, game.terminal, gamma=GAMMA, lam=LAM,
                                                 max_iters=2000)
    assert float(undamped.residual) > 1e-2 and int(undamped.iterations) == 2000
    # Another damping reaches the same equilibrium.
    other = tabular.marginal_soft_q_iteration(game.next_state, game.rewards, game.terminal, gamma=GAMMA, lam=LAM,
                                              damping=0.5, tol=2e-6)
    np.testing.assert_allclose(other.qbar, qre.qbar, atol=1e-4)


def test_one_agent_qre_is_soft_value_iteration():
    rng = np.random.default_rng(0)
    S, A = 15, 4
    next_state = rng.integers(0, S, (S, A))
    terminal = np.zeros(S, bool)
    terminal[0] = True
    next_state[0] = 0
    rewards = rng.normal(size=(1, S, A)).astype(np.float32)
    rewards[0, 0] = 0.0
    qre = tabular.marginal_soft_q_iteration(next_state, rewards, terminal, gamma=0.8, lam=2.0, tol=1e-6)
    P = np.eye(S)[next_state]
    reference = soft_value_iteration(P, rewards[0].astype(np.float64), terminal, 0.8, 2.0)
    np.testing.assert_allclose(qre.qbar[0], reference, atol=1e-4)


def test_marginal_critic_is_the_soft_q_of_the_induced_mdp(small):
    """The paper's key fact: with the others fixed, Qbar_i is a single-agent soft Q."""
    _, _, game, qre = small
    for i in range(2):
        next_idx, probs, reward = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                                      qre.policies, i)
        S = game.num_states
        P = np.zeros((S, game.num_actions, S))
        np.add.at(P, (np.arange(S)[:, None, None], np.arange(game.num_actions)[None, :, None], np.asarray(next_idx)),
                  np.asarray(probs, np.float64))
        np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-6)
        reference = soft_value_iteration(P, np.asarray(reward, np.float64), game.terminal, GAMMA, LAM)
        np.testing.assert_allclose(qre.qbar[i], reference, atol=1e-4)


def test_policy_evaluation_and_occupancy_match_linear_solves(small):
    _, _, game, qre = small
    S = game.num_states
    joint = np.einsum("sa,sb->sab", qre.policies[0], qre.policies[1])
    P_pi = np.zeros((S, S))
    np.add.at(P_pi, (np.repeat(np.arange(S), 25), game.next_state.reshape(-1)), joint.reshape(-1))
    for i in range(2):
        r_pi = (joint * game.rewards[i]).reshape(S, -1).sum(1)
        v = np.linalg.solve(np.eye(S) - GAMMA * P_pi * ~game.terminal[None, :], r_pi)
        np.testing.assert_allclose(tabular.policy_evaluation(game.next_state, game.rewards, game.terminal,
                                                             qre.policies, gamma=GAMMA)[i], v, atol=1e-5)
    d = (1 - GAMMA) * np.linalg.solve(np.eye(S) - GAMMA * P_pi.T, game.initial)
    np.testing.assert_allclose(tabular.state_occupancy(game.next_state, game.terminal, game.initial, qre.policies,
                                                       gamma=GAMMA), d, atol=1e-5)


# ------------------------------------------------------------------ canonicalisation


def test_potential_shaping_canonicalises_away():
    rng, next_idx, probs, terminal = random_mdp(1)
    S, A = next_idx.shape[:2]
    weights = rng.uniform(0.1, 1.0, (S, A))
    reward = rng.normal(size=(S, A))
    phi = np.where(terminal, 0.0, rng.normal(size=S) * 3)
    shaping = 0.9 * (probs * phi[next_idx]).sum(-1) - phi[:, None]
    c = tabular.canonicalize_shaping(reward, next_idx, probs, terminal, weights, gamma=0.9)
    c_shaped = tabular.canonicalize_shaping(reward + shaping, next_idx, probs, terminal, weights, gamma=0.9)
    np.testing.assert_allclose(c_shaped, c, atol=1e-8)
    assert tabular.weighted_pearson(c, c_shaped, weights) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(tabular.canonicalize_shaping(shaping, next_idx, probs, terminal, weights, gamma=0.9),
                               0.0, atol=1e-8)
    # Not the identity: it does remove something from a generic reward, and positive scaling is kept.
    assert np.abs(c - reward).max() > 1e-2
    np.testing.assert_allclose(tabular.canonicalize_shaping(2 * reward, next_idx, probs, terminal, weights, gamma=0.9),
                               2 * c, atol=1e-8)


def test_boltzmann_log_policy_is_the_reward_up_to_shaping(small):
    """After canonicalisation, log pi_i / lam of the QRE expert equals the true marginal reward."""
    _, _, game, qre = small
    d = np.asarray(tabular.state_occupancy(game.next_state, game.terminal, game.initial, qre.policies, gamma=GAMMA))
    for i in range(2):
        next_idx, probs, reward = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                                      qre.policies, i)
        w = (d * ~game.terminal)[:, None] * np.asarray(qre.policies[i])
        canon = tabular.ShapingCanonicalizer(next_idx, probs, game.terminal, w, gamma=GAMMA)
        # Terminal states carry no weight (their "policy" is arbitrary); rows with weight below
        # 1e-6 of the largest are left out of the exact comparison, because the ridge that
        # keeps the normal equations solvable also shrinks their potentials.
        support = w > 1e-6 * w.max()
        assert support.sum() > 400
        np.testing.assert_allclose(canon(np.log(qre.policies[i]) / LAM)[support], canon(reward)[support],
                                   atol=1e-3)  # float32 QRE
        assert tabular.weighted_pearson(canon(np.log(qre.policies[i])), canon(reward), w) > 0.9999


def test_weighted_pearson():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert tabular.weighted_pearson(x, y, np.ones(50)) == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Integer weights are repetitions.
    w = rng.integers(1, 4, 50)
    assert tabular.weighted_pearson(x, y, w) == pytest.approx(np.corrcoef(np.repeat(x, w), np.repeat(y, w))[0, 1])
    assert tabular.weighted_pearson(x, -3 * x + 1, w) == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match="shapes differ"):
        tabular.weighted_pearson(x, y[:3], w)


def test_canonicalizer_errors_name_the_field():
    _, next_idx, probs, terminal = random_mdp(2)
    with pytest.raises(ConfigError, match="weights"):
        tabular.ShapingCanonicalizer(next_idx, probs, terminal, np.ones((3, 3)), gamma=0.9)
    canon = tabular.ShapingCanonicalizer(next_idx, probs, terminal, np.ones(next_idx.shape[:2]), gamma=0.9)
    with pytest.raises(ConfigError, match=r"reward has shape \(2, 2\)"):
        canon(np.zeros((2, 2)))


# ------------------------------------------------------------------ the agent


@pytest.fixture(scope="module")
def big_demos(small):
    env, params, game, qre = small
    return mamql.collect_demonstrations(env, params, qre.policies, jax.random.PRNGKey(0), 2000)


def test_collected_demonstrations_follow_the_game(small, big_demos):
    _, _, game, _ = small
    d = jax.tree.map(np.asarray, big_demos)
    v = d.valid
    assert d.state.shape == (20_000,) and d.actions.shape == (20_000, 2)
    np.testing.assert_array_equal(d.next_state[v], game.next_state[d.state[v], d.actions[v, 0], d.actions[v, 1]])
    np.testing.assert_array_equal(d.terminated[v], game.terminal[d.next_state[v]])
    # Episodes start at the initial state and stop at their first done.
    firsts = d.state.reshape(2000, 10)[:, 0]
    assert (game.initial[firsts] == 1).all()
    assert d.terminated[v].sum() > 0 and (~v).sum() > 0


# Each critic with its learning rate (an MLP wants a much smaller Adam step than a table).
CRITIC_HPARAMS = {"tabular": mamql.MAMQLHParams(), "mlp": mamql.MAMQLHParams(learning_rate=1e-3)}


@pytest.mark.parametrize("critic", mamql.CRITICS)
def test_mamql_on_plentiful_expert_data_recovers_the_expert_marginal_policies(small, big_demos, critic):
    env, _, game, qre = small
    config = mamql.MAMQLConfig(num_states=game.num_states, critic=critic, num_updates=1500)
    features = mamql.observation_features(env) if critic == "mlp" else None
    state, metrics = jax.jit(mamql.make_train(config, big_demos, features))(jax.random.PRNGKey(0),
                                                                            CRITIC_HPARAMS[critic])
    assert np.isfinite(metrics["loss"]).all() and metrics["loss"][-1] < metrics["loss"][0]
    tables = mamql.critic_tables(config, state.params, features)
    policies = np.asarray(mamql.policy_table(config, tables, state.hparams))
    d = jax.tree.map(np.asarray, big_demos)
    visits = np.bincount(d.state[d.valid], minlength=game.num_states)
    often = visits >= 500
    assert often.sum() >= 5
    tv = 0.5 * np.abs(policies[:, often] - np.asarray(qre.policies)[:, often]).sum(-1)
    # Sampling error alone: E[TV] ~ 0.8 / sqrt(n) ~ 0.036 at n = 500 visits for 5 actions. The same bound
    # for the MLP: with 324 states and ~5k parameters it can represent the table, so it has no excuse
    # beyond the data's own sampling error.
    assert tv.mean() < 0.06, tv.mean()
    uniform_tv = 0.5 * np.abs(0.2 - np.asarray(qre.policies)[:, often]).sum(-1)
    assert tv.mean() < 0.3 * uniform_tv.mean()


def test_observation_features_are_the_env_observations(small):
    env, _, game, _ = small
    features = np.asarray(mamql.observation_features(env))
    assert features.shape == (2, game.num_states, env.observation_space("agent_0").shape[0]) == (2, 324, 20)
    assert features.dtype == np.float32
    for index in (0, 7, 100, 250, game.num_states - 1):
        state = env.state_from_index(index)
        assert int(env.state_index(state)) == index
        obs = env.get_obs(state)
        for i, agent in enumerate(env.agents):
            np.testing.assert_array_equal(features[i, index], obs[agent])
    # Distinct joint states are distinct inputs to each agent's critic.
    assert len(np.unique(features[0], axis=0)) == game.num_states


def test_mlp_critic_loss_is_the_tabular_loss_on_its_tables(small, big_demos):
    """The MLP path (rows gathered per batch, or per state when the batch is larger) is the same objective."""
    env, _, game, _ = small
    features = mamql.observation_features(env)
    hp = mamql.MAMQLHParams(gamma=GAMMA, lam=LAM)
    few = jax.tree.map(lambda x: x[:100], big_demos)  # 2 x 100 rows < 324 states: per-row evaluation
    for method in mamql.METHODS:
        mlp = mamql.MAMQLConfig(num_states=game.num_states, method=method, critic="mlp")
        table = dataclasses.replace(mlp, critic="tabular")
        params = mamql.init_params(mlp, jax.random.PRNGKey(1), hp, features)
        # Scale the output layer up so the critic is far from constant.
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: x * 300.0 if "Dense_2" in jax.tree_util.keystr(path) else x, params)
        tables = mamql.critic_tables(mlp, params, features)
        assert tables.shape == mamql.table_shape(mlp) and float(tables.std()) > 0.1
        for demos in (few, big_demos):
            for agent in range(2):
                got, _ = mamql._agent_loss(mlp, params, agent, demos, hp, features)
                want, _ = mamql._agent_loss(table, tables, agent, demos, hp)
                assert float(got) == pytest.approx(float(want), rel=1e-4, abs=1e-5), (method, agent)


def test_mamql_loss_is_iq_learn_on_the_marginal_critic():
    """Pin the formula: E[V(s) - Q(s, a_i)] + E[(Q - gamma V(s'))^2] / (4 alpha) on one agent's table."""
    rng = np.random.default_rng(0)
    S, A, B = 6, 3, 8
    table = jnp.asarray(rng.normal(size=(S, A)), jnp.float32)
    demos = mamql.Demonstrations(state=jnp.asarray(rng.integers(0, S, B), jnp.int32),
                                 actions=jnp.asarray(rng.integers(0, A, (B, 2)), jnp.int32),
                                 next_state=jnp.asarray(rng.integers(0, S, B), jnp.int32),
                                 terminated=jnp.asarray([False] * 7 + [True]), valid=jnp.asarray([True] * 6 + [False] * 2))
    hp = mamql.MAMQLHParams(gamma=0.8, lam=3.0, alpha=0.5)
    config = mamql.MAMQLConfig(num_states=S, num_actions=A)
    other = jnp.asarray(rng.normal(size=(S, A)), jnp.float32)  # agent 0's table: must not enter agent 1's loss
    loss, _ = mamql._agent_loss(config, jnp.stack([other, table]), 1, demos, hp)
    t, s, a, ns = np.asarray(table, np.float64), np.asarray(demos.state), np.asarray(demos.actions[:, 1]), np.asarray(demos.next_state)
    V = np.log(np.exp(3.0 * t).sum(1)) / 3.0
    q, v, nv = t[s, a], V[s], V[ns] * (1 - np.asarray(demos.terminated))
    r = q - 0.8 * nv
    m = np.asarray(demos.valid)
    expected = (-r[m]).mean() + (v[m] - 0.8 * nv[m]).mean() + (r[m] ** 2).mean() / 2.0
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_joint_iq_policy_is_the_marginal_of_the_joint_boltzmann():
    rng = np.random.default_rng(0)
    config = mamql.MAMQLConfig(num_states=4, num_actions=3, method="joint_iq")
    params = jnp.asarray(rng.normal(size=(2, 4, 3, 3)), jnp.float32)
    hp = mamql.MAMQLHParams(lam=2.0)
    pol = np.asarray(mamql.policy_table(config, params, hp))
    joint0 = np.exp(2.0 * np.asarray(params[0], np.float64))
    joint0 /= joint0.sum((1, 2), keepdims=True)
    np.testing.assert_allclose(pol[0], joint0.sum(2), atol=1e-6)
    joint1 = np.exp(2.0 * np.asarray(params[1], np.float64))
    joint1 /= joint1.sum((1, 2), keepdims=True)
    np.testing.assert_allclose(pol[1], joint1.sum(1), atol=1e-6)


def test_recovered_reward_of_the_expert_critic_is_the_true_reward_after_canonicalisation(small):
    _, _, game, qre = small
    config = mamql.MAMQLConfig(num_states=game.num_states)
    rewards = mamql.recovered_rewards(config, qre.qbar, mamql.MAMQLHParams(gamma=GAMMA, lam=LAM),
                                      jnp.asarray(game.next_state), jnp.asarray(game.terminal), qre.policies)
    for i in range(2):
        _, _, true_reward = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards), qre.policies, i)
        live = ~game.terminal
        # The expert's marginal critic satisfies the soft Bellman equation exactly: no shaping even needed.
        np.testing.assert_allclose(np.asarray(rewards[i])[live], np.asarray(true_reward)[live], atol=1e-4)


def test_recovered_reward_of_any_marginal_critic_is_its_log_policy_up_to_shaping(small):
    """``Qbar - gamma E[V(s')] = log pi / lam + V(s) - gamma E[V(s')]`` for ANY critic, not only the expert's.

    So after canonicalisation MAMQL's reward carries exactly the information of its own
    policy's log-probabilities (why its reward correlation tracks BC's in mamql-gems).
    Fails if the residual's discount, its terminal handling (V = 0 there) or its next-state
    expectation were wrong: the difference would then not be a potential shaping.
    """
    _, _, game, qre = small
    config = mamql.MAMQLConfig(num_states=game.num_states)
    hp = mamql.MAMQLHParams(gamma=GAMMA, lam=LAM)
    tables = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (2, game.num_states, game.num_actions))
    rewards = np.asarray(mamql.recovered_rewards(config, tables, hp, jnp.asarray(game.next_state),
                                                 jnp.asarray(game.terminal), qre.policies))
    log_policy = np.log(np.asarray(mamql.policy_table(config, tables, hp), np.float64)) / LAM
    live = ~game.terminal
    weights = np.repeat(live[:, None].astype(np.float64), game.num_actions, 1)
    for i in range(2):
        next_idx, probs, _ = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                                 qre.policies, i)
        # Not already equal: the two differ by a large shaping term ...
        assert np.abs(rewards[i] - log_policy[i])[live].max() > 0.1
        canon = tabular.ShapingCanonicalizer(next_idx, probs, game.terminal, weights, gamma=GAMMA)
        # ... which the canonicalisation removes exactly (float32 tables).
        np.testing.assert_allclose(canon(rewards[i])[live], canon(log_policy[i])[live], atol=2e-5)
    # The wrong discount in the residual leaves a non-shaping difference behind.
    wrong = np.asarray(mamql.recovered_rewards(config, tables, hp.replace(gamma=0.5), jnp.asarray(game.next_state),
                                               jnp.asarray(game.terminal), qre.policies))
    next_idx, probs, _ = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards), qre.policies, 0)
    canon = tabular.ShapingCanonicalizer(next_idx, probs, game.terminal, weights, gamma=GAMMA)
    assert np.abs(canon(wrong[0]) - canon(log_policy[0]))[live].max() > 1e-2


def test_reference_policies_of_the_experiment(small):
    """mamql-gems' references: the expert on demonstrated states (uniform elsewhere), and add-one action counts."""
    from experiments.mamql_gems import reference_policies

    _, _, game, qre = small
    expert = np.asarray(qre.policies, np.float64)
    S, A = game.num_states, game.num_actions
    s0 = int(np.argmax(game.initial))
    s1 = int(game.next_state[s0, 2, 3])
    demos = mamql.Demonstrations(state=jnp.array([s0, s1, s0, 7], jnp.int32),
                                 actions=jnp.array([[2, 3], [1, 1], [2, 0], [4, 4]], jnp.int32),
                                 next_state=jnp.array([s1, 0, 0, 0], jnp.int32), terminated=jnp.zeros(4, bool),
                                 valid=jnp.array([True, True, True, False]))  # the last row is padding
    ref = reference_policies(qre.policies, demos, S)
    ceiling, freq = ref["coverage_ceiling"], ref["empirical_frequencies"]
    assert ceiling.shape == freq.shape == (2, S, A)
    seen = np.zeros(S, bool)
    seen[[s0, s1]] = True
    np.testing.assert_allclose(ceiling[:, seen], expert[:, seen])
    np.testing.assert_allclose(ceiling[:, ~seen], 1.0 / A)
    # s0 was visited twice: agent 0 played 2, 2; agent 1 played 3, 0. Add-one: (n + 1) / (2 + A).
    np.testing.assert_allclose(freq[0, s0], [1 / 7, 1 / 7, 3 / 7, 1 / 7, 1 / 7])
    np.testing.assert_allclose(freq[1, s0], [2 / 7, 1 / 7, 1 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(freq[1, s1], [1 / 6, 2 / 6, 1 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(freq[:, 7], 1.0 / A)  # only a padding row there
    # The exact expert policy scores 1 on the experiment's metric; the coverage ceiling less.
    d = np.asarray(tabular.state_occupancy(game.next_state, game.terminal, game.initial, qre.policies, gamma=GAMMA))
    w = (d * ~game.terminal)[:, None] * expert[0]
    next_idx, probs, true_reward = tabular.induced_mdp(jnp.asarray(game.next_state), jnp.asarray(game.rewards),
                                                       qre.policies, 0)
    canon = tabular.ShapingCanonicalizer(next_idx, probs, game.terminal, w, gamma=GAMMA)
    corr = lambda pol: tabular.weighted_pearson(canon(true_reward), canon(np.log(pol) / LAM), w)
    assert corr(expert[0]) > 0.9999
    assert corr(ceiling[0]) < 0.9


@pytest.mark.parametrize("critic", mamql.CRITICS)
def test_methods_run_vmapped_over_seeds_and_demonstration_sets(small, critic):
    env, params, game, qre = small
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    demos = jax.vmap(lambda k: mamql.collect_demonstrations(env, params, qre.policies, k, 4))(keys)
    features = mamql.observation_features(env) if critic == "mlp" else None
    hp = CRITIC_HPARAMS[critic]
    for method in mamql.METHODS:
        config = mamql.MAMQLConfig(num_states=game.num_states, method=method, critic=critic, num_updates=5)
        states, metrics = jax.jit(jax.vmap(lambda k, d, c=config: mamql.make_train(c, d, features)(k, hp)))(
            keys, demos)
        assert metrics["loss"].shape == (3, 5) and np.isfinite(metrics["loss"]).all()
        tables = jax.vmap(lambda p, c=config: mamql.critic_tables(c, p, features))(states.params)
        assert tables.shape == (3,) + mamql.table_shape(config)
        assert not np.allclose(tables[0], tables[1])
        if critic == "tabular":
            np.testing.assert_array_equal(tables, states.params)
        trainer = mamql.make_train(config, jax.tree.map(lambda x: x[0], demos), features)
        evaluation = trainer.evaluate(jax.tree.map(lambda x: x[0], states), jax.random.PRNGKey(0))
        assert evaluation["demo_nll"].shape == (2,)


def test_bad_configs_and_data_name_the_field():
    with pytest.raises(ConfigError, match="MAMQLConfig.method: expected one of"):
        mamql.MAMQLConfig(method="gail")
    with pytest.raises(ConfigError, match="MAMQLConfig.value_term"):
        mamql.MAMQLConfig(value_term="v0")
    with pytest.raises(ConfigError, match="MAMQLConfig.num_updates: expected a positive number"):
        mamql.MAMQLConfig(num_updates=0)
    rows = jnp.zeros(4, jnp.int32)
    bad = mamql.Demonstrations(state=rows, actions=jnp.zeros((4, 3), jnp.int32), next_state=rows,
                               terminated=jnp.zeros(4, bool), valid=jnp.ones(4, bool))
    with pytest.raises(ConfigError, match=r"Demonstrations.actions: expected shape \(4, 2\)"):
        mamql.make_train(mamql.MAMQLConfig(num_states=10), bad)
    floats = bad.replace(actions=jnp.zeros((4, 2), jnp.int32), state=jnp.zeros(4))
    with pytest.raises(ConfigError, match="Demonstrations.state: expected integer"):
        mamql.make_train(mamql.MAMQLConfig(num_states=10), floats)
    with pytest.raises(ConfigError, match="MAMQLConfig.critic: expected one of"):
        mamql.MAMQLConfig(critic="linear")
    with pytest.raises(ConfigError, match="MAMQLConfig.hidden_sizes"):
        mamql.MAMQLConfig(critic="mlp", hidden_sizes=())
    good = bad.replace(actions=jnp.zeros((4, 2), jnp.int32))
    mlp = mamql.MAMQLConfig(num_states=10, critic="mlp")
    with pytest.raises(ConfigError, match=r"features: MAMQLConfig.critic='mlp' needs .* got None"):
        mamql.make_train(mlp, good)
    with pytest.raises(ConfigError, match=r"features: expected shape \[num_agents=2, num_states=10, F\], got \(2, 9, 3\)"):
        mamql.make_train(mlp, good, jnp.zeros((2, 9, 3)))
    with pytest.raises(ConfigError, match="features: expected floats"):
        mamql.make_train(mlp, good, jnp.zeros((2, 10, 3), jnp.int32))
    with pytest.raises(ConfigError, match="features: a tabular critic takes no observation features"):
        mamql.make_train(mamql.MAMQLConfig(num_states=10), good, jnp.zeros((2, 10, 3)))
    # MLP params are not tables: the error says what to call.
    params = mamql.init_params(mlp, jax.random.PRNGKey(0), mamql.MAMQLHParams(), jnp.zeros((2, 10, 3)))
    with pytest.raises(ConfigError, match=r"policy_table: expected tables of shape \(2, 10, 5\).*critic_tables"):
        mamql.policy_table(mlp, params, mamql.MAMQLHParams())


# ------------------------------------------------------------------ the experiment


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "run"
    cli(["mamql-gems", "--quick", "--out", str(out), "--no-progress"])
    for name in ("config.json", "result.json", "mamql_gems.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert result["quick"] and result["seeds"] == 2 and result["expert"]["qre_residual"] < 1e-4
    for method in ("mamql", "joint_iq", "bc"):
        per_seed = result["methods"][method]["per_seed"]
        assert np.asarray(per_seed["return_percent"]).shape == (2, 2)
        assert np.asarray(per_seed["reward_corr"]).shape == (2, 2)
        ci = result["methods"][method]["return_percent"]["agent_0"]
        assert ci["ci95_low"] <= ci["mean"] <= ci["ci95_high"] and ci["n"] == 2
    assert set(result["claims"]) == {"return", "reward", "beats_baselines_return", "beats_baselines_reward", "all"}
    for name in ("coverage_ceiling", "empirical_frequencies"):
        assert np.asarray(result["references"][name]["per_seed_reward_corr"]).shape == (2, 2)
        assert -1.0 <= result["references"][name]["reward_corr"]["agent_1"]["mean"] <= 1.0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mamql") / "run"
    cli(["mamql-gems", "--out", str(out), "--no-progress"])
    return json.loads((out / "result.json").read_text())


# The default configuration (MLP critics). Measured (5 seeds, 50 demos; experiments/mamql_gems.py's docstring),
# agent_0 / agent_1: return % of expert MAMQL 96.9 / 101.2, joint IQ 96.9 / 101.5, BC 97.3 / 102.2;
# canonicalised reward Pearson MAMQL 0.21 / 0.24, joint IQ 0.29 / 0.34, BC 0.22 / 0.25.


@pytest.mark.slow
def test_full_run_returns_claim(full_run):
    assert full_run["critic"] == "mlp" and full_run["seeds"] >= 3 and full_run["expert"]["qre_residual"] < 1e-4
    assert full_run["claims"]["return"], full_run["methods"]["mamql"]["return_percent"]
    for agent in full_run["agents"]:  # far above the uniform-random policy
        assert full_run["methods"]["mamql"]["return_percent"][agent]["mean"] > 3 * full_run["random_return_percent"][agent]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured (MLP critics, 5 seeds, 50 demos): MAMQL's canonicalised reward "
                   "Pearson 0.21 / 0.24 < 0.8")
def test_full_run_reward_claim(full_run):
    assert full_run["claims"]["reward"], full_run["methods"]["mamql"]["reward_corr"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured (MLP critics): return % MAMQL 96.9 / 101.2 vs BC 97.3 / 102.2 and "
                   "joint IQ 96.9 / 101.5: MAMQL is not above both baselines (all within each other's CIs)")
def test_full_run_beats_baselines_on_return(full_run):
    assert full_run["claims"]["beats_baselines_return"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured (MLP critics): reward Pearson MAMQL 0.21 / 0.24 vs joint IQ "
                   "0.29 / 0.34 and BC 0.22 / 0.25: joint IQ-Learn is the best")
def test_full_run_beats_baselines_on_reward(full_run):
    assert full_run["claims"]["beats_baselines_reward"]
