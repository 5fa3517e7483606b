"""Online GRPO for the Flax LM, in the ``make_train(config) -> train(key, hparams)`` shape.

Each update samples ``num_generations`` (G) completions for each of ``prompts_per_update`` prompts with
the KV cache (:func:`rljax.lm.sampling.generate`), scores them with a jittable ``reward_fn``, turns the
rewards into group advantages and takes ``num_iterations`` optimiser steps on the GRPO loss of that batch
(:mod:`rljax.losses.grpo`). Generation, scoring and the updates are one jitted function, so a whole run
is one ``lax.scan`` and seeds or hyperparameters vmap, as for the RL agents.

    trainer = make_train(GRPOConfig(model=cfg, max_completion_length=16), prompt_ids, prompt_mask, reward_fn)
    state, metrics = jax.jit(trainer)(key, GRPOHParams(learning_rate=1e-5))

``reward_fn(prompt_ids [B, P], completion_ids [B, T], completion_mask [B, T]) -> [B]``. Prompts are
left-padded ``[N, P]`` rows (as :func:`rljax.lm.sampling.generate` takes them). ``advantage_fn(key,
rewards [B]) -> [B]`` replaces the group advantages, e.g. a noisy verifier and its correction
(:mod:`rljax.losses.noisy_verifier`); the ``reward`` metric stays ``reward_fn``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rljax.core.config import POSITIVE, NON_NEGATIVE, ConfigError, require, require_in_ranges, require_one_of, require_positive
from rljax.core.trainer import Trainer
from rljax.lm import model as model_lib
from rljax.lm.model import LanguageModel, LMConfig
from rljax.lm.sampling import SamplingConfig, generate, positions_from_mask
from rljax.lm.train import OPTIMIZERS, float32_params, make_optimizer
from rljax.losses import grpo as grpo_losses
from rljax.losses import kl_control, preference

KL_PENALTIES = ("loss", "reward")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """Static settings; TRL's ``GRPOConfig`` names and defaults where they exist (``loss_type="dapo"``,
    ``scale_rewards="group"``, ``num_generations=8``, ``num_iterations=1``, clipping 0.2, ``beta=0``).

    ``kl_reference``: keep a frozen copy of the initial params (needed for ``beta > 0``; TRL's default
    ``beta = 0`` needs no reference model). ``kl_penalty`` says where ``beta`` puts the KL to it:

    * ``"loss"``: ``beta`` times the per-token k3 estimate, added to the loss (GRPO, TRL's ``GRPOTrainer``);
    * ``"reward"``: ``beta`` times the sequence's ``log pi - log pi_ref`` (under the sampling policy),
      subtracted from its reward before the advantages, as RL with a KL penalty does (Ziegler et al.;
      TRL's RLOO and PPO; :mod:`rljax.losses.kl_control`). With ``scale_rewards="none"`` and one iteration
      this is REINFORCE on the KL-regularised objective with the group mean as baseline.
    """

    model: LMConfig
    max_completion_length: int
    num_updates: int = 100
    num_generations: int = 8
    prompts_per_update: int = 4
    num_iterations: int = 1  # optimiser steps per generation batch (mu)
    temperature: float = 1.0
    eos_id: int | None = None
    pad_id: int = 0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    kl_reference: bool = False
    kl_penalty: str = "loss"
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping

    def __post_init__(self):
        require_positive(self, "max_completion_length", "num_updates", "prompts_per_update", "num_iterations")
        require(self.num_generations >= 2, f"GRPOConfig.num_generations: groups need >= 2 completions, got {self.num_generations}")
        require(self.temperature > 0, f"GRPOConfig.temperature: expected > 0, got {self.temperature}")
        require_one_of(self, "loss_type", grpo_losses.LOSS_TYPES)
        require_one_of(self, "scale_rewards", grpo_losses.SCALE_REWARDS)
        require_one_of(self, "kl_penalty", KL_PENALTIES)
        require_one_of(self, "optimizer", OPTIMIZERS)
        require("lm" in self.model.heads, f"GRPOConfig.model.heads: GRPO needs the 'lm' head, got {self.model.heads}")

    @property
    def batch_size(self) -> int:
        """Completions per update: ``prompts_per_update * num_generations``."""
        return self.prompts_per_update * self.num_generations


@struct.dataclass
class GRPOHParams:
    """Dynamic hyperparameters (vmappable)."""

    learning_rate: float = 1e-5
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2


_HPARAM_RANGES = {
    "learning_rate": POSITIVE,
    "beta": NON_NEGATIVE,
    "epsilon_low": (lambda v: (v >= 0) & (v < 1), "a number in [0, 1)"),
    "epsilon_high": NON_NEGATIVE,
}


@struct.dataclass
class GRPOState:
    params: Any
    ref_params: Any  # None unless config.kl_reference
    opt_state: Any
    key: jax.Array
    step: jax.Array
    hparams: GRPOHParams


def completion_token_logps(params, config: LMConfig, ids, attention_mask, prompt_length: int, temperature: float = 1.0):
    """Per-token log-probs [B, T] of the completion tokens ``ids[:, P:]`` after left-padded prompts of width
    ``P = prompt_length``, with the positions that generation used (:func:`positions_from_mask`), under the
    policy sampled from: logits divided by ``temperature``, as TRL's GRPO loss takes them."""
    out = LanguageModel(config).apply(
        {"params": params}, ids, attention_mask, positions=positions_from_mask(attention_mask),
        logits_from=prompt_length - 1,
    )  # fmt: skip
    return preference.token_logps(out.logits / temperature, ids[:, prompt_length - 1 :])


def make_train(
    config: GRPOConfig,
    prompt_ids,
    prompt_mask,
    reward_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    *,
    init_params: Any = None,
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
    advantage_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Trainer:
    """Build the GRPO trainer over the prompts ``[N, P]`` (left-padded; ``prompt_mask`` 1 on tokens).

    ``init_params``: start (and the KL reference) from these params instead of a random init.
    ``eval_fn(params)``: scalar metrics for ``evaluate`` (e.g. an exact expected reward).
    ``advantage_fn(key, rewards [B]) -> advantages [B]``: instead of ``group_advantages(rewards, G,
    config.scale_rewards)``; its key is drawn per update.
    """
    prompt_ids, prompt_mask = np.asarray(prompt_ids), np.asarray(prompt_mask)
    require(prompt_ids.ndim == 2 and prompt_mask.shape == prompt_ids.shape,
            f"prompts: expected prompt_ids and prompt_mask of one shape [N, P], got {prompt_ids.shape} and {prompt_mask.shape}")
    N, P = prompt_ids.shape
    require(prompt_mask.sum(axis=1).min() >= 1, "prompt_mask: every prompt needs at least one token")
    require(N >= config.prompts_per_update,
            f"prompts: {N} prompts is fewer than GRPOConfig.prompts_per_update = {config.prompts_per_update}")
    largest = int(prompt_ids.max())
    require(0 <= int(prompt_ids.min()) and largest < config.model.vocab_size,
            f"prompt_ids: token ids must lie in [0, vocab_size = {config.model.vocab_size}); the largest is {largest}")
    T, G = config.max_completion_length, config.num_generations
    prompts = jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, jnp.int32)
    sampling = SamplingConfig(max_new_tokens=T, temperature=config.temperature, eos_id=config.eos_id, pad_id=config.pad_id)

    def init(key, hp: GRPOHParams) -> GRPOState:
        require_in_ranges(hp, _HPARAM_RANGES)
        try:
            beta = np.asarray(hp.beta, np.float64)
        except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            beta = None  # traced: checked where it is concrete
        if beta is not None and not config.kl_reference and np.any(beta != 0):
            raise ConfigError(f"GRPOHParams.beta = {beta.tolist()} needs GRPOConfig.kl_reference = True (a frozen reference)")
        init_key, key = jax.random.split(key)
        params = init_params if init_params is not None else model_lib.init_params(config.model, init_key)
        params = jax.tree.map(jnp.asarray, params)
        lr = jnp.asarray(hp.learning_rate, jnp.float32)
        opt_state = make_optimizer(config, lr).init(float32_params(params))
        return GRPOState(params=params, ref_params=params if config.kl_reference else None, opt_state=opt_state,
                         key=key, step=jnp.zeros((), jnp.int32), hparams=hp)

    def generation_batch(state: GRPOState, key):
        """G completions for each of ``prompts_per_update`` prompts (drawn without replacement), scored."""
        prompt_key, sample_key = jax.random.split(key)
        rows = jax.random.choice(prompt_key, N, (config.prompts_per_update,), replace=False)
        ids, mask = (jnp.repeat(x[rows], G, axis=0) for x in prompts)  # the G of a prompt side by side
        gen = generate(state.params, config.model, ids, mask, sample_key, sampling)
        rewards = jnp.asarray(reward_fn(ids, gen.tokens, gen.mask), jnp.float32)
        full_ids = jnp.concatenate([ids, gen.tokens], axis=1)
        full_mask = jnp.concatenate([mask, gen.mask], axis=1)
        return full_ids, full_mask, gen.mask, rewards

    def update(state: GRPOState):
        hp = state.hparams
        key, batch_key = jax.random.split(state.key)
        ids, attention, completion_mask, rewards = generation_batch(state, batch_key)
        logps_of = lambda params: completion_token_logps(params, config.model, ids, attention, P, config.temperature)  # noqa: E731
        # With one iteration the sampling policy is the one being trained: its log-probs are the loss's own
        # (stop-gradient inside grpo_loss), as TRL skips that forward pass; with more, a constant copy.
        old_logps = jax.lax.stop_gradient(logps_of(state.params)) if config.num_iterations > 1 else None
        ref_logps = jax.lax.stop_gradient(logps_of(state.ref_params)) if config.kl_reference else None
        kl_in_reward = config.kl_penalty == "reward" and config.kl_reference

        def advantages_of(sampling_logps):
            scores = rewards
            if kl_in_reward:
                scores = kl_control.kl_penalized_rewards(rewards, sampling_logps, ref_logps, completion_mask, hp.beta)
            if advantage_fn is None:
                return grpo_losses.group_advantages(scores, G, config.scale_rewards)
            # its own key, folded in so the sampling stream is the same with or without it
            advantages = jnp.asarray(advantage_fn(jax.random.fold_in(batch_key, 1), scores), jnp.float32)
            require(advantages.shape == rewards.shape,
                    f"advantage_fn: expected advantages of the rewards' shape {rewards.shape}, got {advantages.shape}")
            return advantages

        # a KL in the reward needs the sampling policy's log-probs: the loss's own on a single iteration
        fixed_advantages = None if kl_in_reward and old_logps is None else advantages_of(old_logps)
        tx = make_optimizer(config, hp.learning_rate)

        def loss_fn(params):
            logps = logps_of(params)
            advantages = advantages_of(jax.lax.stop_gradient(logps)) if fixed_advantages is None else fixed_advantages
            loss, metrics = grpo_losses.grpo_loss(
                logps, logps if old_logps is None else old_logps, advantages, completion_mask,
                ref_logps=None if kl_in_reward else ref_logps, beta=hp.beta,
                epsilon_low=hp.epsilon_low, epsilon_high=hp.epsilon_high, loss_type=config.loss_type,
                max_completion_length=T,
            )  # fmt: skip
            if kl_in_reward:  # the mean sequence log-ratio: an estimate of KL(pi || pi_ref)
                metrics["kl"] = kl_control.sequence_log_ratio(
                    jax.lax.stop_gradient(logps), ref_logps, completion_mask).mean()
            return loss, metrics

        def iteration(carry, _):
            params, opt_state = carry
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            # The optimiser runs in float32 (as rljax.lm.train's); apply_updates casts back to the params' dtype.
            grads = float32_params(grads)
            updates, opt_state = tx.update(grads, opt_state, float32_params(params))
            return (optax.apply_updates(params, updates), opt_state), aux | {"loss": loss, "grad_norm": optax.global_norm(grads)}

        (params, opt_state), aux = jax.lax.scan(iteration, (state.params, state.opt_state), None, length=config.num_iterations)
        grouped = rewards.reshape(-1, G)
        metrics = jax.tree.map(lambda x: x.mean(axis=0), aux) | {
            "reward": rewards.mean(),
            "reward_std": rewards.std(),
            "frac_reward_zero_std": jnp.mean(grouped.max(axis=1) == grouped.min(axis=1)),  # no signal in those groups
            "completions/mean_length": completion_mask.sum(axis=1).mean(),
        }
        return state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1), metrics

    def evaluate(state: GRPOState, key) -> dict[str, jax.Array]:
        return {} if eval_fn is None else eval_fn(state.params)

    return Trainer(
        config=config, init=init, update=update, evaluate=evaluate,
        num_updates=config.num_updates, env_steps_per_update=config.batch_size,
    )  # fmt: skip
