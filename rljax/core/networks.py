"""Flax linen networks. Parameters are plain pytrees; distributions are distrax."""

from __future__ import annotations

from typing import Sequence

import distrax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "swish": nn.swish}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers with orthogonal(sqrt 2) init, then a linear output of ``out_dim``."""

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        act = activation_fn(self.activation)
        for size in self.hidden_sizes:
            x = act(nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.orthogonal(self.out_scale))(x)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (PureJaxRL's PPO network).

    ``__call__(obs [..., obs_dim]) -> (distrax distribution over actions, value)``
    where value has shape ``[...]``, or ``[..., value_dim]`` when ``value_dim`` is
    set (vector-valued critics for vector rewards). Discrete actions get a
    Categorical over ``action_dim`` logits; continuous ones a diagonal Gaussian
    with a state-independent log standard deviation.
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    value_dim: int | None = None

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(obs.shape[:-1] + (-1,)) if obs.ndim > 1 else obs
        head = MLP(self.hidden_sizes, self.action_dim, self.activation, out_scale=0.01, name="actor")(obs)
        if self.discrete:
            pi = distrax.Categorical(logits=head)
        else:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            pi = distrax.MultivariateNormalDiag(head, jnp.exp(log_std))
        value = MLP(self.hidden_sizes, self.value_dim or 1, self.activation, out_scale=1.0, name="critic")(obs)
        return pi, (value if self.value_dim else value[..., 0])
