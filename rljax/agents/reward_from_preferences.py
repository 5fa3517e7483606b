"""Learning a linear reward from segment preferences under the partial-return or the regret model
(Knox et al., TMLR 2024), on a tabular deterministic MDP.

The reward is linear in known features, ``r_w(s, a) = w . phi(s, a)``; ``w`` is fitted by full-batch
Adam on the preference cross-entropy (``rljax.losses.reward_learning``). The regret model needs
``A*_w``, so each step runs ``horizon`` Bellman backups of ``Q*_w`` and differentiates through them:
the gradient of ``V*_w`` is the discounted feature sum along the optimal path, i.e. the successor
features of the optimal policy that the official code approximates with a library of policies.

The paper's tasks are undiscounted; the default gamma = 0.99 is ours. With gamma = 1 a cycle of zero
reward (the delivery layouts' coin cells: time -1, coin +1) ties with progress towards the goal, and
the greedy policy of an exact Q* may loop on it forever; any gamma < 1 breaks the tie.

    fit = make_fit(FitConfig(model="regret"))
    w = fit(w0, next_state, features, terminal, states, actions, labels, weights)   # vmappable
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rljax.core import tabular
from rljax.core.config import require, require_positive
from rljax.losses import reward_learning


@dataclasses.dataclass(frozen=True)
class FitConfig:
    model: str = "regret"  # one of reward_learning.PREFERENCE_MODELS
    num_steps: int = 1000
    learning_rate: float = 0.05
    gamma: float = 0.99
    horizon: int = 50  # Bellman backups for Q*_w (the longest optimal path must fit)

    def __post_init__(self):
        require(self.model in reward_learning.PREFERENCE_MODELS,
                f"FitConfig.model: expected one of {reward_learning.PREFERENCE_MODELS}, got {self.model!r}")
        require_positive(self, "num_steps", "learning_rate", "horizon")
        require(0.0 < self.gamma <= 1.0, f"FitConfig.gamma: expected a number in (0, 1], got {self.gamma}")


def segment_logits(config: FitConfig, w, next_state, features, terminal, states, actions) -> jax.Array:
    """``[P]`` log-odds that the first of each pair is preferred; ``states`` / ``actions``: ``[P, 2, T]``."""
    rewards = features @ w
    q = tabular.optimal_q(next_state, rewards, terminal, gamma=config.gamma, num_iters=config.horizon) \
        if config.model == "regret" else None
    scores = reward_learning.segment_scores(reward_learning.step_scores(config.model, rewards, q), states, actions)
    return reward_learning.preference_logit(scores[:, 0], scores[:, 1], config.gamma)


def make_fit(config: FitConfig):
    """``fit(w0, next_state, features, terminal, states, actions, labels, weights) -> w``: ``num_steps`` of
    Adam on the weighted preference cross-entropy (``weights`` select a subset of the pairs)."""
    optimizer = optax.adam(config.learning_rate)

    def loss(w, next_state, features, terminal, states, actions, labels, weights):
        logits = segment_logits(config, w, next_state, features, terminal, states, actions)
        return reward_learning.preference_loss(logits, labels, weights)

    def fit(w0, next_state, features, terminal, states, actions, labels, weights):
        grad = jax.grad(loss)

        def step(carry, _):
            w, opt_state = carry
            g = grad(w, next_state, features, terminal, states, actions, labels, weights)
            updates, opt_state = optimizer.update(g, opt_state)
            return (optax.apply_updates(w, updates), opt_state), None

        (w, _), _ = jax.lax.scan(step, (w0, optimizer.init(w0)), None, length=config.num_steps)
        return w

    return fit


def greedy_policy(q: jax.Array) -> jax.Array:
    """One-hot ``[S, A]`` argmax of ``q`` (ties: the lowest action index)."""
    return jax.nn.one_hot(q.argmax(-1), q.shape[-1])


def mean_scaled_return(next_state, true_rewards, terminal, policy, *, gamma, horizon, eval_iters=2000) -> jax.Array:
    """Knox et al.'s evaluation: ``(J(pi) - J(uniform)) / (J(pi*) - J(uniform))``, J the discounted return
    under ``true_rewards`` (``eval_iters`` backups) averaged over non-terminal start states: 1 = optimal,
    0 = uniform random. pi* is greedy in the ``horizon``-backup Q* of the true rewards."""
    def value(pi):
        v = tabular.policy_evaluation(next_state, true_rewards[None], terminal, pi[None], gamma=gamma,
                                      num_iters=eval_iters)[0]
        return jnp.where(terminal, 0.0, v).sum() / (~terminal).sum()

    optimal = greedy_policy(tabular.optimal_q(next_state, true_rewards, terminal, gamma=gamma, num_iters=horizon))
    uniform = jnp.full_like(policy, 1.0 / policy.shape[-1])
    j_uniform = value(uniform)
    return (value(policy) - j_uniform) / (value(optimal) - j_uniform)
