"""PARL / A-PARL: policy alignment from human feedback as a bilevel problem (Chakraborty et al., ICLR 2024;
papers/control-rl.md §9), on random tabular MDPs with a linear reward.

* Lower level: the policy ``pi*(nu)`` is the entropy-regularised optimum of ``r_nu(s, a) = phi(s, a) . nu``
  (soft value iteration at ``temperature``; the regulariser makes it unique).
* Upper level: ``G(nu) = E_{y ~ rho(.; pi*(nu))} E_{l ~ human(y)}[U_nu(y, l)]``: pairs of segments ``y`` are
  drawn from the *current optimal policy*, a person labels them (here Bradley-Terry on the true reward's
  segment returns), and ``U`` is the label's Bradley-Terry log-likelihood under ``r_nu``.
* Hypergradient (the paper's): ``grad G = E[grad_nu U] + (d pi*/d nu)^T E[U grad_pi log rho(y; pi)]``, the
  second term because the data distribution moves with ``nu``. Here ``pi*(nu)`` is exact, so ``d pi*/d nu``
  (the implicit-function derivative of the soft Bellman fixed point) is autodiff through the value
  iteration, and one sampled surrogate, ``U + stop_gradient(U) log rho``, carries both terms.
* ``hypergradient="myopic"``: the alternating baseline, ``E[grad_nu U]`` only (the data are treated as fixed).

Each iteration draws ``pairs_per_iteration`` fresh pairs from the current policy (the queries), takes one Adam
step on ``nu`` and re-solves the lower level. ``train(key, hparams)`` draws its own MDP from ``key``
(``num_states`` x ``num_actions``, Dirichlet transitions, Gaussian features and true weights) and returns the
oracle-scaled return of ``pi*(nu)`` after every iteration: 1 = the optimal regularised policy of the true
reward, 0 = the uniform policy, both scored by the true discounted return from the initial distribution.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rljax.core import reward_theory as rt
from rljax.core.config import require, require_positive
from rljax.losses import reward_learning

HYPERGRADIENTS = ("parl", "myopic")


@dataclasses.dataclass(frozen=True)
class PARLConfig:
    num_states: int = 20
    num_actions: int = 4
    num_features: int = 8
    gamma: float = 0.9
    temperature: float = 0.1  # the lower level's entropy weight
    segment_length: int = 5
    pairs_per_iteration: int = 16
    num_iterations: int = 300
    hypergradient: str = "parl"
    value_iters: int = 200
    transition_concentration: float = 0.3  # Dirichlet parameter of tau(.|s, a): small = near-deterministic
    # Subtract each pair's leave-one-out batch mean of U in the score-function term: an unbiased variance
    # reduction that the paper's estimator does not have (off by default).
    score_baseline: bool = False

    def __post_init__(self):
        require(self.hypergradient in HYPERGRADIENTS,
                f"PARLConfig.hypergradient: expected one of {HYPERGRADIENTS}, got {self.hypergradient!r}")
        require_positive(self, "num_states", "num_actions", "num_features", "temperature", "segment_length",
                         "pairs_per_iteration", "num_iterations", "value_iters", "transition_concentration")
        require(0.0 < self.gamma < 1.0, f"PARLConfig.gamma: expected a number in (0, 1), got {self.gamma}")
        require(not self.score_baseline or self.pairs_per_iteration > 1,
                f"PARLConfig.score_baseline: a leave-one-out baseline needs pairs_per_iteration > 1, "
                f"got {self.pairs_per_iteration}")


class PARLHParams(NamedTuple):
    learning_rate: float = 0.05


class Task(NamedTuple):
    transitions: jax.Array  # [S, A, S]
    features: jax.Array  # [S, A, K]
    initial: jax.Array  # [S]
    true_weights: jax.Array  # [K]


def random_task(config: PARLConfig, key) -> Task:
    k_tau, k_phi, k_nu = jax.random.split(key, 3)
    alpha = jnp.full(config.num_states, config.transition_concentration)
    return Task(transitions=jax.random.dirichlet(k_tau, alpha, (config.num_states, config.num_actions)),
                features=jax.random.normal(k_phi, (config.num_states, config.num_actions, config.num_features)),
                initial=jnp.full(config.num_states, 1.0 / config.num_states),
                true_weights=jax.random.normal(k_nu, (config.num_features,)))


def lower_level_log_policy(config: PARLConfig, task: Task, nu) -> jax.Array:
    """``log pi*(nu)`` ``[S, A]``: the maximal-causal-entropy policy of ``r_nu = phi . nu``, differentiable in ``nu``
    (as log-probabilities: at a low temperature some probabilities underflow to 0)."""
    reward = jnp.broadcast_to((task.features @ nu)[..., None], task.transitions.shape)
    q = rt.soft_q_values(reward, task.transitions, gamma=config.gamma, alpha=config.temperature,
                         num_iters=config.value_iters)
    return jax.nn.log_softmax(q / config.temperature, axis=-1)


def sample_segments(key, log_policy, task: Task, num: int, length: int):
    """``num`` segments of ``length`` steps from ``initial`` under ``log_policy``: ``(states, actions)`` ``[num, T]``."""

    def one(key):
        k0, k_steps = jax.random.split(key)

        def step(state, key):
            k_a, k_s = jax.random.split(key)
            action = jax.random.categorical(k_a, log_policy[state])
            next_state = jax.random.categorical(k_s, jnp.log(task.transitions[state, action]))
            return next_state, (state, action)

        _, (states, actions) = jax.lax.scan(step, jax.random.categorical(k0, jnp.log(task.initial)),
                                            jax.random.split(k_steps, length))
        return states, actions

    return jax.vmap(one)(jax.random.split(key, num))


def upper_surrogate(config: PARLConfig, task: Task, nu, states, actions, labels) -> jax.Array:
    """A sampled objective whose gradient in ``nu`` is the hypergradient estimate on these pairs.

    ``states`` / ``actions`` ``[M, 2, T]`` were drawn from ``pi*(nu)``, ``labels [M]`` (1: the first preferred).
    ``U`` is each label's Bradley-Terry log-likelihood under ``r_nu``; for PARL the score-function term
    ``stop_gradient(U) * log rho(y; pi*(nu))`` adds the data distribution's dependence on ``nu``.
    """
    reward = task.features @ nu
    logits = reward_learning.preference_logit(reward_learning.segment_scores(reward, states[:, 0], actions[:, 0]),
                                              reward_learning.segment_scores(reward, states[:, 1], actions[:, 1]))
    log_likelihood = -optax.sigmoid_binary_cross_entropy(logits, labels)  # U [M]
    if config.hypergradient == "myopic":
        return log_likelihood.mean()
    log_rho = lower_level_log_policy(config, task, nu)[states, actions].sum((1, 2))
    weight = log_likelihood
    if config.score_baseline:
        num = log_likelihood.shape[0]
        weight = log_likelihood - (log_likelihood.sum() - log_likelihood) / (num - 1)
    return (log_likelihood + jax.lax.stop_gradient(weight) * log_rho).mean()


def scaled_return(config: PARLConfig, task: Task, log_policy) -> jax.Array:
    """True discounted return of ``exp(log_policy)``: 1 at the true reward's regularised optimum, 0 at uniform."""
    reward = jnp.broadcast_to((task.features @ task.true_weights)[..., None], task.transitions.shape)
    score = lambda pi: rt.policy_returns(reward, task.transitions, pi, task.initial, gamma=config.gamma)  # noqa: E731
    oracle = jnp.exp(lower_level_log_policy(config, task, task.true_weights))
    uniform = jnp.full_like(log_policy, 1.0 / config.num_actions)
    return (score(jnp.exp(log_policy)) - score(uniform)) / (score(oracle) - score(uniform))


def query(config: PARLConfig, task: Task, nu, key, num_pairs: int):
    """Draw ``num_pairs`` pairs of segments from ``pi*(nu)`` and have the person label them (Bradley-Terry on the
    true reward's segment returns): ``(states [M, 2, T], actions [M, 2, T], labels [M])``."""
    k_seg, k_label = jax.random.split(key)
    states, actions = sample_segments(k_seg, lower_level_log_policy(config, task, nu), task, 2 * num_pairs,
                                      config.segment_length)
    shape = (num_pairs, 2, config.segment_length)
    states, actions = states.reshape(shape), actions.reshape(shape)
    true_reward = task.features @ task.true_weights
    true_logits = reward_learning.preference_logit(
        reward_learning.segment_scores(true_reward, states[:, 0], actions[:, 0]),
        reward_learning.segment_scores(true_reward, states[:, 1], actions[:, 1]))
    return states, actions, jax.random.bernoulli(k_label, jax.nn.sigmoid(true_logits)).astype(nu.dtype)


class TrainResult(NamedTuple):
    weights: jax.Array  # [K] the final nu
    true_weights: jax.Array  # [K]
    scaled_return: jax.Array  # [num_iterations + 1], before the first update and after each
    queries: jax.Array  # [num_iterations + 1] preference queries answered so far
    final_upper_objective: jax.Array  # G(nu) at the final nu, estimated on 4096 fresh on-policy pairs


def make_train(config: PARLConfig):
    """``train(key, hparams) -> TrainResult`` on the MDP drawn from ``key`` (vmappable over keys)."""
    myopic = dataclasses.replace(config, hypergradient="myopic")  # its surrogate is the plain mean of U

    def train(key, hparams: PARLHParams) -> TrainResult:
        task_key, init_key, loop_key, eval_key = jax.random.split(key, 4)
        task = random_task(config, task_key)
        optimizer = optax.adam(hparams.learning_rate)
        nu = 0.01 * jax.random.normal(init_key, (config.num_features,))

        def iteration(carry, key):
            nu, opt_state = carry
            states, actions, labels = query(config, task, nu, key, config.pairs_per_iteration)
            grad = jax.grad(lambda v: -upper_surrogate(config, task, v, states, actions, labels))(nu)
            updates, opt_state = optimizer.update(grad, opt_state)
            nu = optax.apply_updates(nu, updates)
            return (nu, opt_state), scaled_return(config, task, lower_level_log_policy(config, task, nu))

        first = scaled_return(config, task, lower_level_log_policy(config, task, nu))
        (nu, _), curve = jax.lax.scan(iteration, (nu, optimizer.init(nu)),
                                      jax.random.split(loop_key, config.num_iterations))
        queries = config.pairs_per_iteration * jnp.arange(config.num_iterations + 1)
        upper = upper_surrogate(myopic, task, nu, *query(config, task, nu, eval_key, 4096))
        return TrainResult(nu, task.true_weights, jnp.concatenate([first[None], curve]), queries, upper)

    return train


def queries_to_reach(result: TrainResult, level: float) -> jax.Array:
    """Queries answered when the scaled return first reaches ``level`` (``inf`` if it never does): ``[...]``."""
    reached = result.scaled_return >= level
    first = jnp.argmax(reached, axis=-1)
    return jnp.where(reached.any(-1), jnp.take_along_axis(result.queries, first[..., None], -1)[..., 0], jnp.inf)
