"""Learned Policy Optimisation (Lu et al., NeurIPS 2022) and temporally-aware LPO (Jackson et al., ICLR 2024).

Mirror learning (Kuba et al., 2022) improves a policy by maximising

    L(theta) = E[ r A - f(r, A) ],     r = pi_theta(a|s) / pi_old(a|s)

for any *drift* f with f >= 0 and f(1, .) = 0 (then every update is a monotone
improvement step of the mirror-learning operator). PPO-clip is one drift. LPO
meta-learns f with evolution strategies:

    f_phi(r, A) = ReLU(N_phi(x_{r,A}) - zeta)                   (zeta = 1e-6)
    x_{r,A}     = [1 - r, (1 - r)^2, log r, (log r)^2] (+) A * [the same four]   (8 features)

N_phi is a bias-free tanh MLP (one hidden layer of 128 in the paper), so every
feature, and hence N_phi, is 0 at r = 1: f(1, A) = ReLU(-zeta) = 0 for *any* phi,
and the ReLU keeps f >= 0. The drift constraints therefore hold by construction.

TA-LPO adds the fraction of training done, n / N, multiplicatively (the paper's
eq. 10), which keeps the constraints:

    x_{r,A,n} = [x_{r,A}, (n / N) * x_{r,A}]                     (16 features)

The drift parameters live in the hparams pytree (``LPOHParams.drift``), so a
population of drift networks trains as one vmapped call of the ordinary PPO
trainer; ``rljax.core.es.meta_train`` evolves them (``lifetime_fitness`` below is
the fitness: the return at the end of training).

    trainer = make_train(LPOConfig(temporal=True))
    hp = LPOHParams(drift=init_drift(key, LPOConfig(temporal=True)))
    state, metrics = jax.jit(trainer)(key, hp)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from rljax.agents import ppo
from rljax.core.config import require, require_positive
from rljax.core.trainer import Trainer
from rljax.losses.policy_gradient import drift_surrogate

NUM_BASE_FEATURES = 8


def drift_features(ratio: jax.Array, advantage: jax.Array, progress: jax.Array | None = None) -> jax.Array:
    """LPO's drift inputs ``[..., 8]`` (``[..., 16]`` with ``progress`` = n / N for TA-LPO); all 0 at r = 1."""
    log_ratio = jnp.log(ratio)
    base = jnp.stack([1.0 - ratio, (1.0 - ratio) ** 2, log_ratio, log_ratio**2], axis=-1)
    x = jnp.concatenate([base, advantage[..., None] * base], axis=-1)
    if progress is None:
        return x
    return jnp.concatenate([x, progress * x], axis=-1)


class DriftNetwork(nn.Module):
    """N_phi: a bias-free tanh MLP with a scalar output (bias-free so that N_phi(0) = 0)."""

    hidden_sizes: tuple[int, ...] = (128,)

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_sizes:
            x = nn.tanh(nn.Dense(width, use_bias=False)(x))
        return nn.Dense(1, use_bias=False)(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class LPOConfig:
    """Static settings: the inner PPO run and the drift network's shape.

    Defaults: the digest's smallest faithful experiment, gymnax CartPole with
    32 envs x 16 steps and N = 40 updates (20,480 env steps per lifetime).
    """

    ppo: ppo.PPOConfig = ppo.PPOConfig(
        num_envs=32, num_steps=16, total_timesteps=32 * 16 * 40, update_epochs=4, num_minibatches=4, eval_episodes=8,
    )
    temporal: bool = False  # TA-LPO: feed n / N to the drift
    drift_hidden_sizes: tuple[int, ...] = (128,)
    zeta: float = 1e-6  # f = ReLU(N - zeta)

    def __post_init__(self):
        require_positive(self, "zeta")
        require(len(self.drift_hidden_sizes) > 0 and all(h > 0 for h in self.drift_hidden_sizes),
                f"LPOConfig.drift_hidden_sizes: expected positive widths, got {self.drift_hidden_sizes}")
        object.__setattr__(self, "drift_hidden_sizes", tuple(self.drift_hidden_sizes))

    @property
    def num_features(self) -> int:
        return 2 * NUM_BASE_FEATURES if self.temporal else NUM_BASE_FEATURES

    def with_horizon(self, num_updates: int) -> LPOConfig:
        """The same agent trained for ``num_updates`` updates (the meta-evaluation's unseen horizons)."""
        batch = self.ppo.num_envs * self.ppo.num_steps
        return dataclasses.replace(self, ppo=dataclasses.replace(self.ppo, total_timesteps=num_updates * batch))


@struct.dataclass
class LPOHParams(ppo.PPOHParams):
    """PPO's hparams plus the drift network's parameters (the meta-parameters phi)."""

    drift: Any = None


def drift_network(config: LPOConfig) -> DriftNetwork:
    """The drift ``f_phi(r, A)``: a bias-free tanh MLP of ``drift_hidden_sizes``."""
    return DriftNetwork(config.drift_hidden_sizes)


def init_drift(key: jax.Array, config: LPOConfig) -> Any:
    """Random drift parameters (Flax's default init), the ES's starting mean."""
    return drift_network(config).init(key, jnp.zeros((config.num_features,)))


def zero_drift(config: LPOConfig) -> Any:
    """Drift parameters that give f = 0 everywhere: L reduces to the importance-weighted advantage E[r A]."""
    return jax.tree.map(jnp.zeros_like, init_drift(jax.random.PRNGKey(0), config))


def drift(config: LPOConfig, params: Any, ratio: jax.Array, advantage: jax.Array, progress=None) -> jax.Array:
    """f_phi(r, A) (TA-LPO: f_phi(r, A, n / N)), elementwise over ``ratio`` and ``advantage``."""
    if config.temporal and progress is None:
        raise ValueError("drift: LPOConfig.temporal = True needs progress = n / N")
    x = drift_features(ratio, advantage, jnp.broadcast_to(progress, ratio.shape)[..., None] if config.temporal else None)
    return jax.nn.relu(drift_network(config).apply(params, x) - config.zeta)


def make_surrogate(config: LPOConfig):
    """The mirror-learning surrogate with the drift from ``hp.drift`` (PPO's ``Surrogate`` signature)."""

    def surrogate(log_prob, old_log_prob, advantage, hp: LPOHParams, progress, kl):
        del kl
        ratio = jnp.exp(log_prob - old_log_prob)
        return drift_surrogate(log_prob, old_log_prob, advantage, drift(config, hp.drift, ratio, advantage, progress))

    return surrogate


def make_train(config: LPOConfig) -> Trainer:
    """PPO's trainer with the learned drift in place of the clip; ``hp.drift`` holds phi."""
    trainer = ppo.make_train(config.ppo, surrogate=make_surrogate(config))
    return dataclasses.replace(trainer, config=config)


def lifetime_fitness(config: LPOConfig):
    """``fitness(drift_params, key) -> scalar``: one full PPO run with this drift, then the
    mean return of ``config.ppo.eval_episodes`` evaluation episodes (the ES maximises it)."""
    trainer = make_train(config)

    def fitness(drift_params, key, hparams: LPOHParams | None = None):
        hp = (LPOHParams() if hparams is None else hparams).replace(drift=drift_params)
        train_key, eval_key = jax.random.split(key)
        state, _ = trainer(train_key, hp)
        return trainer.evaluate(state, eval_key)["return"].mean()

    return fitness
