"""Flax linen networks. Parameters are plain pytrees; distributions are distrax."""

from __future__ import annotations

from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rljax.core.config import require_one_of

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "swish": nn.swish, "elu": nn.elu}
INITIALIZERS = ("orthogonal", "torch")


def activation_fn(name: str):
    """The activation named ``name`` (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def torch_dense(features: int, fan_in: int) -> nn.Dense:
    """A dense layer initialised like PyTorch's ``nn.Linear``: weights and bias ~ U(+-1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return nn.Dense(
        features, kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
    )


class MLP(nn.Module):
    """Dense layers, then a linear output of ``out_dim``.

    ``initializer="orthogonal"``: orthogonal(sqrt 2) hidden layers, orthogonal(out_scale)
    output, zero biases (PureJaxRL, CleanRL). ``initializer="torch"``: PyTorch's
    ``nn.Linear`` default everywhere (for parity with PyTorch reference code).
    """

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    out_scale: float = 1.0
    initializer: str = "orthogonal"

    @nn.compact
    def __call__(self, x):
        require_one_of(self, "initializer", INITIALIZERS)
        act = activation_fn(self.activation)
        for size in self.hidden_sizes:
            dense = (torch_dense(size, x.shape[-1]) if self.initializer == "torch"
                     else nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2))))
            x = act(dense(x))
        if self.initializer == "torch":
            return torch_dense(self.out_dim, x.shape[-1])(x)
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.orthogonal(self.out_scale))(x)


class TanhMeanGaussianActor(nn.Module):
    """IQL's offline policy (shared by IQL, XQL, f-DVL and ReCOIL): ``obs [..., obs_dim] ->
    N(tanh(mu(obs)), diag(exp(log_std)))`` over ``[..., action_dim]``, with a state-independent
    ``log_std`` clipped to ``[log_std_min, log_std_max]``.

    The mean is squashed, the distribution is not: dataset actions on the box edge (+-1, a
    bang-bang expert's) keep finite log-probabilities, unlike under a tanh-squashed Gaussian.
    Orthogonal(sqrt 2) hidden layers, orthogonal(0.01) mean layer, zero biases.
    """

    action_dim: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs):
        act = activation_fn(self.activation)
        x = obs
        for size in self.hidden_sizes:
            x = act(nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        mean = jnp.tanh(nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))(x))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(jnp.exp(log_std), mean.shape))


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
    initializer: str = "orthogonal"  # see MLP

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(obs.shape[:-1] + (-1,)) if obs.ndim > 1 else obs
        head = MLP(self.hidden_sizes, self.action_dim, self.activation, out_scale=0.01, initializer=self.initializer,
                   name="actor")(obs)
        if self.discrete:
            pi = distrax.Categorical(logits=head)
        else:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            pi = distrax.MultivariateNormalDiag(head, jnp.exp(log_std))
        value = MLP(self.hidden_sizes, self.value_dim or 1, self.activation, out_scale=1.0,
                    initializer=self.initializer, name="critic")(obs)
        return pi, (value if self.value_dim else value[..., 0])


class SquashedGaussianActor(nn.Module):
    """tanh-squashed diagonal Gaussian policy (SAC; Haarnoja et al., 2018, appendix C).

    ``__call__(obs [..., obs_dim]) -> distrax distribution over actions in (-1, 1)``,
    whose ``log_prob`` includes the tanh change of variables. The log standard
    deviation is clipped to [log_std_min, log_std_max] for stability.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden_sizes, 2 * self.action_dim, self.activation, name="torso")(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        base = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return distrax.Transformed(base, distrax.Block(distrax.Tanh(), ndims=1))


class QEnsemble(nn.Module):
    """``num`` independent Q(s, a) MLPs evaluated in one vectorised call.

    ``__call__(obs [..., obs_dim], action [..., action_dim]) -> q [num, ...]``.
    """

    num: int = 2
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(
            MLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, axis_size=self.num
        )
        q = ensemble(self.hidden_sizes, 1, self.activation, name="q")(jnp.concatenate([obs, action], axis=-1))
        return q[..., 0]
