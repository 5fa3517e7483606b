"""Online f-DPG (Go et al., ICML 2023) for the Flax LM, in the ``make_train(config) -> train(key, hparams)``
shape: fit the policy to the target ``p(x) ∝ P(x) = pi_ref(x) phi(x)`` by minimising ``D_f(pi || p)``.

Each update samples ``batch_size`` sequences from the policy after one fixed prompt (the KV cache,
:func:`rljax.lm.sampling.generate`), scores them under the target, and takes one optimiser step on the
f-DPG surrogate (:mod:`rljax.losses.f_dpg`), as the official code (naver/disco, online: the policy is its
own proposal) does:

* ``log P(x) = log pi_ref(x) + log phi(x)``: ``pi_ref`` is the initial policy, kept frozen, and
  ``log_scorer_fn`` gives ``log phi`` (``r(x) / beta`` for an RLHF-style target ``pi_ref exp(r / beta)``,
  ``log a(x)`` for a constraint);
* ``Z`` is the running mean of ``P(x) / pi(x)`` over every sample drawn so far (kept in log space),
  updated with the batch before it is used;
* the baseline is the mean pseudo-reward of the last ``baseline_window`` samples before the batch (none
  on the first update).

    trainer = make_train(FDPGConfig(model=cfg, length=8, divergence="js"), prompt_ids, log_scorer_fn)
    state, metrics = jax.jit(trainer)(key, FDPGHParams(learning_rate=1e-4))

``log_scorer_fn(completion_ids [B, T]) -> [B]``, jittable. Sequences have exactly ``length`` tokens (no
EOS), so the target lives on a fixed-length space.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rljax.core.config import POSITIVE, require, require_in_ranges, require_one_of, require_positive
from rljax.core.trainer import Trainer
from rljax.lm import model as model_lib
from rljax.lm.grpo import completion_token_logps
from rljax.lm.model import LMConfig
from rljax.lm.sampling import SamplingConfig, generate
from rljax.lm.train import OPTIMIZERS, float32_params, make_optimizer
from rljax.losses import f_dpg as f_dpg_losses


@dataclasses.dataclass(frozen=True)
class FDPGConfig:
    """Static settings (disco's ``FDPGTuner`` names where they exist)."""

    model: LMConfig
    length: int  # tokens per sampled sequence
    divergence: str = "js"
    num_updates: int = 100
    batch_size: int = 64  # samples per update
    baseline_window: int = 1024  # samples in the moving-average baseline (a multiple of batch_size)
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping

    def __post_init__(self):
        require_positive(self, "length", "num_updates", "batch_size", "baseline_window")
        require_one_of(self, "divergence", tuple(f_dpg_losses.GENERATORS))
        require_one_of(self, "optimizer", OPTIMIZERS)
        require(self.baseline_window % self.batch_size == 0,
                f"FDPGConfig.baseline_window: expected a multiple of batch_size = {self.batch_size}, got "
                f"{self.baseline_window}")
        require("lm" in self.model.heads, f"FDPGConfig.model.heads: f-DPG needs the 'lm' head, got {self.model.heads}")


@struct.dataclass
class FDPGHParams:
    learning_rate: float = 1e-4


@struct.dataclass
class FDPGState:
    params: Any
    ref_params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    log_z_sum: jax.Array  # log of the sum of P(x) / pi(x) over every sample so far
    num_samples: jax.Array
    recent_rewards: jax.Array  # [baseline_window // batch_size] mean pseudo-reward of the last batches
    hparams: FDPGHParams


def make_train(
    config: FDPGConfig,
    prompt_ids,
    log_scorer_fn: Callable[[jax.Array], jax.Array],
    *,
    init_params: Any = None,
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
) -> Trainer:
    """Build the f-DPG trainer after the prompt ``prompt_ids`` [P] (one context).

    ``init_params``: the initial policy, which is also ``pi_ref`` (default: a random init).
    ``eval_fn(params)``: scalar metrics for ``evaluate`` (e.g. exact divergences to the target).
    """
    prompt = np.asarray(prompt_ids)
    require(prompt.ndim == 1 and prompt.size >= 1, f"prompt_ids: expected one prompt [P] of >= 1 tokens, got {prompt.shape}")
    require(0 <= int(prompt.min()) and int(prompt.max()) < config.model.vocab_size,
            f"prompt_ids: token ids must lie in [0, vocab_size = {config.model.vocab_size}); got {prompt.tolist()}")
    B, P = config.batch_size, prompt.size
    prompt_batch = jnp.broadcast_to(jnp.asarray(prompt, jnp.int32), (B, P))
    attention = jnp.ones((B, P + config.length), jnp.int32)
    sampling = SamplingConfig(max_new_tokens=config.length)
    window_batches = config.baseline_window // B

    def init(key, hp: FDPGHParams) -> FDPGState:
        require_in_ranges(hp, {"learning_rate": POSITIVE})
        init_key, key = jax.random.split(key)
        params = init_params if init_params is not None else model_lib.init_params(config.model, init_key)
        params = jax.tree.map(jnp.asarray, params)
        opt_state = make_optimizer(config, jnp.asarray(hp.learning_rate, jnp.float32)).init(float32_params(params))
        return FDPGState(params=params, ref_params=params, opt_state=opt_state, key=key, step=jnp.zeros((), jnp.int32),
                         log_z_sum=jnp.asarray(-jnp.inf, jnp.float32), num_samples=jnp.zeros((), jnp.float32),
                         recent_rewards=jnp.zeros(window_batches, jnp.float32), hparams=hp)

    def sequence_logps(params, ids):
        return completion_token_logps(params, config.model, ids, attention, P).sum(axis=1)

    def update(state: FDPGState):
        key, sample_key = jax.random.split(state.key)
        completions = generate(state.params, config.model, prompt_batch, jnp.ones((B, P), jnp.int32), sample_key,
                               sampling).tokens
        ids = jnp.concatenate([prompt_batch, completions], axis=1)
        target_log_scores = sequence_logps(state.ref_params, ids) + log_scorer_fn(completions)
        filled = jnp.minimum(state.step, window_batches)
        baseline = jnp.where(filled > 0, state.recent_rewards.sum() / jnp.maximum(filled, 1), 0.0)

        def loss_fn(params):
            # one policy forward: its log-probs, as constants, also give Z and the pseudo-rewards
            logps = sequence_logps(params, ids)
            policy_logps = jax.lax.stop_gradient(logps)
            # Z: the running mean of P / pi over every sample so far, this batch included
            log_z_sum = jnp.logaddexp(state.log_z_sum, jax.nn.logsumexp(target_log_scores - policy_logps))
            log_z = log_z_sum - jnp.log(state.num_samples + B)
            rewards = f_dpg_losses.pseudo_reward(
                config.divergence, f_dpg_losses.log_ratio(policy_logps, target_log_scores, log_z))
            return f_dpg_losses.f_dpg_loss(logps, rewards, baseline), (rewards, log_z_sum, log_z)

        tx = make_optimizer(config, state.hparams.learning_rate)
        (loss, (rewards, log_z_sum, log_z)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = float32_params(grads)
        updates, opt_state = tx.update(grads, state.opt_state, float32_params(state.params))
        params = optax.apply_updates(state.params, updates)
        recent = state.recent_rewards.at[state.step % window_batches].set(rewards.mean())
        metrics = {"loss": loss, "pseudo_reward": rewards.mean(), "baseline": baseline, "log_z": log_z,
                   "grad_norm": optax.global_norm(grads)}
        new_state = state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1,
                                  log_z_sum=log_z_sum, num_samples=state.num_samples + B, recent_rewards=recent)
        return new_state, metrics

    def evaluate(state: FDPGState, key) -> dict[str, jax.Array]:
        return {} if eval_fn is None else eval_fn(state.params)

    return Trainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                   env_steps_per_update=B)
