"""Knox et al.'s preference models: regret telescopes to V*(s_0) - [return + V*(s_T)], the logits and loss by
hand, Q*'s gradient is the optimal path's feature sum, the delivery layouts, and fitting recovers the reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import delivery
from rljax.agents import reward_from_preferences as rfp
from rljax.core import tabular
from rljax.core.config import ConfigError
from rljax.losses import reward_learning

GAMMA, HORIZON = 0.99, 50
TRUE_W = jnp.asarray(delivery.TRUE_WEIGHTS)


def layout(seed=0):
    return delivery.random_delivery_mdp(jax.random.PRNGKey(seed))


def true_q(mdp):
    return tabular.optimal_q(mdp.next_state, delivery.rewards(mdp, TRUE_W), mdp.terminal, gamma=GAMMA,
                             num_iters=HORIZON)


def test_delivery_layout_counts_terminals_and_walls():
    mdp = layout()
    cells = np.asarray(mdp.cells)
    for name, count in delivery.CELL_COUNTS.items():
        assert (cells == delivery.CELL_TYPES.index(name)).sum() == count
    terminal = np.asarray(mdp.terminal)
    assert terminal.sum() == delivery.CELL_COUNTS["goal"] + delivery.CELL_COUNTS["sheep"]
    next_state = np.asarray(mdp.next_state)
    np.testing.assert_array_equal(next_state[terminal], np.nonzero(terminal)[0][:, None].repeat(4, 1))  # absorbing
    np.testing.assert_array_equal(np.asarray(mdp.features)[terminal], 0.0)
    # Non-terminal corner (0, 0) if it is one: up and left stay, right goes to 1, down to 5.
    if not terminal[0]:
        assert next_state[0].tolist() == [0, 1, 5, 0]
    # Features of entering a cell: the time cost, then the entered cell's type.
    s = int(np.nonzero(~terminal)[0][0])
    for a in range(4):
        phi = np.asarray(mdp.features[s, a])
        assert phi[0] == 1.0 and phi[1:].sum() == (cells[next_state[s, a]] != 0)
    with pytest.raises(ValueError, match="size = 3 has 9 cells"):
        delivery.random_delivery_mdp(jax.random.PRNGKey(0), size=3)


def test_segments_follow_the_transitions_from_non_terminal_starts():
    mdp = layout(1)
    states, actions = delivery.random_segments(jax.random.PRNGKey(2), mdp, 500, 3)
    states, actions = np.asarray(states), np.asarray(actions)
    assert states.shape == actions.shape == (500, 3)
    assert not np.asarray(mdp.terminal)[states[:, 0]].any()
    np.testing.assert_array_equal(states[:, 1:], np.asarray(mdp.next_state)[states[:, :-1], actions[:, :-1]])


def test_optimal_q_by_hand_on_a_chain():
    # 0 -> 1 -> 2 (terminal); action 0 moves right with reward -1 (+10 into 2), action 1 stays with reward -2.
    next_state = jnp.array([[1, 0], [2, 1], [2, 2]])
    rewards = jnp.array([[-1.0, -2.0], [9.0, -2.0], [0.0, 0.0]])
    terminal = jnp.array([False, False, True])
    q = tabular.optimal_q(next_state, rewards, terminal, gamma=0.5, num_iters=20)
    np.testing.assert_allclose(np.asarray(q), [[-1 + 0.5 * 9, -2 + 0.5 * 3.5], [9.0, -2 + 0.5 * 9], [0.0, 0.0]])


def test_regret_telescopes_and_is_zero_exactly_on_optimal_segments():
    mdp = layout(3)
    rewards = delivery.rewards(mdp, TRUE_W)
    q = true_q(mdp)
    v = jnp.where(mdp.terminal, 0.0, q.max(-1))
    states, actions = delivery.random_segments(jax.random.PRNGKey(4), mdp, 300, 3)
    end = mdp.next_state[states[:, -1], actions[:, -1]]
    returns = reward_learning.discounted_sum(reward_learning.segment_scores(rewards, states, actions), GAMMA)
    by_definition = v[states[:, 0]] - (returns + GAMMA**3 * v[end])
    advantages = reward_learning.segment_scores(reward_learning.optimal_advantages(q), states, actions)
    np.testing.assert_allclose(np.asarray(reward_learning.regret(advantages, GAMMA)), np.asarray(by_definition),
                               atol=1e-4)
    assert float(by_definition.min()) > -1e-4 and float(by_definition.max()) > 1.0
    # Following the greedy policy: no regret.
    greedy = q.argmax(-1)
    s0 = states[:, 0]
    s1 = mdp.next_state[s0, greedy[s0]]
    opt_states = jnp.stack([s0, s1], -1)
    opt_actions = greedy[opt_states]
    opt_adv = reward_learning.segment_scores(reward_learning.optimal_advantages(q), opt_states, opt_actions)
    np.testing.assert_allclose(np.asarray(reward_learning.regret(opt_adv, GAMMA)), 0.0, atol=1e-6)


def test_logits_and_loss_by_hand():
    scores_1, scores_2 = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0.0, 1.0, 0.0]])
    # sum_t 0.5^t (s1 - s2) = 1 + 0.5 * 1 + 0.25 * 3
    assert float(reward_learning.preference_logit(scores_1, scores_2, 0.5)[0]) == pytest.approx(2.25)
    logits, labels = jnp.array([2.0, -1.0, 0.5]), jnp.array([1.0, 1.0, 0.0])
    by_hand = -(np.log(1 / (1 + np.exp(-2.0))) + np.log(1 / (1 + np.exp(1.0))) + np.log(1 - 1 / (1 + np.exp(-0.5))))
    assert float(reward_learning.preference_loss(logits, labels)) == pytest.approx(by_hand / 3, rel=1e-6)
    weighted = reward_learning.preference_loss(logits, labels, jnp.array([1.0, 1.0, 0.0]))
    assert float(weighted) == pytest.approx(float(reward_learning.preference_loss(logits[:2], labels[:2])), rel=1e-6)
    with pytest.raises(ValueError, match="needs q"):
        reward_learning.step_scores("regret", jnp.zeros((2, 2)), None)
    with pytest.raises(ValueError, match="got 'boltzmann'"):
        reward_learning.step_scores("boltzmann", jnp.zeros((2, 2)), None)


def test_the_gradient_of_v_star_in_w_is_the_optimal_paths_discounted_feature_sum():
    mdp = layout(5)
    start = int(np.nonzero(~np.asarray(mdp.terminal))[0][0])
    grad = jax.grad(lambda w: tabular.optimal_q(mdp.next_state, delivery.rewards(mdp, w), mdp.terminal,
                                                gamma=GAMMA, num_iters=HORIZON)[start].max())(TRUE_W)
    greedy = np.asarray(true_q(mdp).argmax(-1))
    features, s, expected = np.asarray(mdp.features), start, np.zeros(6)
    for t in range(HORIZON):
        expected += GAMMA**t * features[s, greedy[s]]
        s = int(mdp.next_state[s, greedy[s]])
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-4, atol=1e-5)
    assert expected[1] + expected[2] > 0.5  # the path ends at a goal or sheep: not a trivial gradient


def test_scaled_return_is_one_for_the_optimal_policy_and_zero_for_uniform():
    mdp = layout(6)
    rewards = delivery.rewards(mdp, TRUE_W)
    score = lambda pi: float(rfp.mean_scaled_return(mdp.next_state, rewards, mdp.terminal, pi,  # noqa: E731
                                                     gamma=GAMMA, horizon=HORIZON))
    assert score(rfp.greedy_policy(true_q(mdp))) == pytest.approx(1.0, abs=1e-6)
    assert score(jnp.full((25, 4), 0.25)) == pytest.approx(0.0, abs=1e-6)
    assert score(rfp.greedy_policy(-true_q(mdp))) < 0.0  # the worst action everywhere


def test_regret_model_fitted_on_regret_labels_recovers_the_reward_direction_and_an_optimal_policy():
    mdp = layout(7)
    states, actions = delivery.random_segments(jax.random.PRNGKey(8), mdp, 2000, 3)
    states, actions = states.reshape(1000, 2, 3), actions.reshape(1000, 2, 3)
    config = rfp.FitConfig(model="regret")
    logits = rfp.segment_logits(config, TRUE_W, mdp.next_state, mdp.features, mdp.terminal, states, actions)
    labels = jax.random.bernoulli(jax.random.PRNGKey(9), jax.nn.sigmoid(logits)).astype(jnp.float32)
    w = jax.jit(rfp.make_fit(config))(0.01 * jax.random.normal(jax.random.PRNGKey(10), (6,)), mdp.next_state,
                                      mdp.features, mdp.terminal, states, actions, labels, jnp.ones(1000))
    cosine = float(w @ TRUE_W / (jnp.linalg.norm(w) * jnp.linalg.norm(TRUE_W)))
    assert cosine > 0.95
    q = tabular.optimal_q(mdp.next_state, delivery.rewards(mdp, w), mdp.terminal, gamma=GAMMA, num_iters=HORIZON)
    assert float(rfp.mean_scaled_return(mdp.next_state, delivery.rewards(mdp, TRUE_W), mdp.terminal,
                                        rfp.greedy_policy(q), gamma=GAMMA, horizon=HORIZON)) > 0.99


def test_fit_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="FitConfig.model: .*got 'bradley_terry'"):
        rfp.FitConfig(model="bradley_terry")
    with pytest.raises(ConfigError, match="FitConfig.gamma"):
        rfp.FitConfig(gamma=0.0)
    with pytest.raises(ConfigError, match="FitConfig.horizon"):
        rfp.FitConfig(horizon=0)
