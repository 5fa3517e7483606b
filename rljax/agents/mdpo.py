"""On-policy Mirror Descent Policy Optimization (Tomar, Shani, Efroni and Ghavamzadeh, ICLR 2022).

Mirror descent in policy space: each iteration k approximately solves

    theta_{k+1} = argmax_theta  E_{s ~ rho_k}[ E_{a ~ pi_k}[(pi_theta / pi_k) A^{pi_k}(s, a)]
                                              - (1 / t_k) KL(pi_theta(.|s) || pi_k(.|s)) ]

by ``m`` full-batch Adam steps on the same batch, without enforcing a trust region
(the KL term keeps pi_theta near pi_k). The step size is annealed, t_k = t_0 (1 - k / K)
over the K iterations of training, so the KL weight 1 / t_k grows. Note the KL's
direction: pi_theta first (TRPO constrains KL(pi_k || pi_theta)).

It is PPO's trainer with a different policy term: ``m`` = ``update_epochs`` passes over
one minibatch (the whole batch), and ``mirror_descent_surrogate`` with the exact
per-state KL in place of the clip. The paper's settings (official code): Adam at 3e-4
annealed, gradients clipped at 0.5, GAE 0.95, gamma 0.99, no entropy bonus, value
clipping at 0.2.

    trainer = make_train(MDPOConfig())
    state, metrics = jax.jit(trainer)(key, MDPOHParams())
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct

from rljax.agents import ppo
from rljax.core.config import POSITIVE, require, require_in_ranges
from rljax.core.trainer import Trainer
from rljax.losses.policy_gradient import mirror_descent_surrogate


@dataclasses.dataclass(frozen=True)
class MDPOConfig:
    """Static settings: the PPO-style run (``update_epochs`` = m, the paper's 10 full-batch steps) and
    whether t_k is annealed. Defaults: PureJaxRL's CartPole batch of 4 envs x 128 steps."""

    ppo: ppo.PPOConfig = ppo.PPOConfig(update_epochs=10, num_minibatches=1)
    anneal_step_size: bool = True  # t_k = t_0 (1 - k / K); False keeps t_k = t_0

    def __post_init__(self):
        require(self.ppo.num_minibatches == 1, "MDPOConfig.ppo.num_minibatches: MDPO takes full-batch steps, "
                f"expected 1, got {self.ppo.num_minibatches}")


@struct.dataclass
class MDPOHParams(ppo.PPOHParams):
    """PPO's hparams with the paper's defaults, plus t_0, the initial mirror-descent step size.

    ``clip_eps`` clips only the value function here (as the official code's ``cliprange_vf``).
    """

    learning_rate: float = 3e-4
    ent_coef: float = 0.0
    step_size: float = 1.0  # t_0


def step_size(config: MDPOConfig, hp: MDPOHParams, progress) -> jnp.ndarray:
    """t_k at ``progress`` = k / K: t_0 (1 - k / K) when annealed, else t_0."""
    return hp.step_size * (1.0 - progress) if config.anneal_step_size else hp.step_size * jnp.ones_like(progress)


def make_surrogate(config: MDPOConfig):
    """MDPO's policy term in PPO's ``Surrogate`` signature (needs the exact ``kl``)."""

    def surrogate(log_prob, old_log_prob, advantage, hp: MDPOHParams, progress, kl):
        if kl is None:
            raise ValueError("MDPO's surrogate needs the exact KL: call ppo_loss with old_params")
        return mirror_descent_surrogate(log_prob, old_log_prob, advantage, kl, step_size(config, hp, progress))

    return surrogate


def make_train(config: MDPOConfig) -> Trainer:
    """PPO's trainer with MDPO's surrogate; ``hp`` is an ``MDPOHParams`` (``init`` checks t_0 > 0)."""
    trainer = ppo.make_train(config.ppo, surrogate=make_surrogate(config))

    def init(key, hp: MDPOHParams):
        require_in_ranges(hp, {"step_size": POSITIVE})
        return trainer.init(key, hp)

    return dataclasses.replace(trainer, config=config, init=init)
