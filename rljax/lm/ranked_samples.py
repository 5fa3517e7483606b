"""Preference fine-tuning on the policy's own samples ranked by a reward (Tajwar et al., ICML 2024), in the
``make_train(config) -> train(key, hparams)`` shape.

Each update draws ``samples_per_prompt`` (N) completions for each of ``prompts_per_update`` prompts from the
current policy with the KV cache, scores them with a jittable reward, and takes ``inner_steps`` full-batch
optimiser steps on that fixed batch with one of

* ``"dpo"`` / ``"ipo"``: the DPO / IPO loss over every pair of a prompt's samples that the reward ranks
  (:func:`rljax.losses.preference.ranked_pairs_dpo_loss`), against the frozen initial policy (or, with
  ``reference="sampler"``, the policy that drew the round): a *negative gradient* pushes the losers down;
* ``"best_of_n"``: the NLL of each prompt's best sample (:func:`~rljax.losses.preference.best_of_n_nll`):
  maximum likelihood, no negative gradient.

The paper's other axis, on-policy sampling, is the schedule: ``num_updates = 1`` with many inner steps is
*offline* (every sample comes from the initial policy, pi_ref), many updates of fresh samples with few inner
steps each is *on-policy* (online DPO, iterated best-of-N).

Direct Nash Optimization (Rosset et al., 2024; DNO-Prct) is the same loop with ``pairs="best_worst"`` (each
prompt's highest against its lowest-scoring sample, above a margin ``reward_threshold``), ``reference=
"sampler"`` (iteration t's DPO reference is pi_t, the policy that drew its samples) and a ``reward_fn`` that
scores each sample by its win rate against the others of its prompt under a preference oracle
(:func:`rljax.losses.preference.group_win_rates`).

    trainer = make_train(RankedSamplesConfig(model=cfg, length=6, loss="dpo"), prompt_ids, reward_fn)
    state, metrics = jax.jit(trainer)(key, RankedSamplesHParams(learning_rate=1e-3, beta=0.1))

``prompt_ids`` [N_prompts, P] (no padding); ``reward_fn(prompt_ids [B, P], completion_ids [B, T]) -> [B]``.
Completions have ``length`` tokens, or end at ``eos_id`` (then padded with ``pad_id``, outside the loss).
Metrics per update: ``loss`` (at its last step), ``pairs`` (the ranked pairs DPO/IPO used; for best-of-N the
prompts), ``reward`` and ``best_reward`` (mean and per-prompt best of the round's samples) and ``grad_norm``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rljax.core.config import NON_NEGATIVE, POSITIVE, require, require_in_ranges, require_one_of, require_positive
from rljax.core.trainer import Trainer
from rljax.lm import model as model_lib
from rljax.lm.grpo import completion_token_logps
from rljax.lm.model import LMConfig
from rljax.lm.sampling import SamplingConfig, generate
from rljax.lm.train import OPTIMIZERS, float32_params, make_optimizer
from rljax.losses import preference

LOSSES = ("dpo", "ipo", "best_of_n")
PAIRS = ("all", "best_worst")
REFERENCES = ("initial", "sampler")


@dataclasses.dataclass(frozen=True)
class RankedSamplesConfig:
    model: LMConfig
    length: int  # completion tokens per sample
    loss: str = "dpo"
    num_updates: int = 100  # sampling rounds (1: offline)
    samples_per_prompt: int = 8  # N
    prompts_per_update: int = 8
    inner_steps: int = 1  # optimiser steps on each round's samples (sample reuse)
    reward_threshold: float = 0.0  # pairs whose rewards differ by no more are skipped
    pairs: str = "all"  # DPO/IPO on every ranked pair, or on each prompt's best and worst sample only
    reference: str = "initial"  # DPO/IPO's reference: the initial policy, or the policy that drew the round
    eos_id: int | None = None  # a sample ends at EOS (its later tokens are pad_id, outside the loss)
    pad_id: int = 0
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping

    def __post_init__(self):
        require_positive(self, "length", "num_updates", "prompts_per_update", "inner_steps")
        require(self.samples_per_prompt >= 2,
                f"RankedSamplesConfig.samples_per_prompt: ranking needs >= 2 samples per prompt, got {self.samples_per_prompt}")
        require(self.reward_threshold >= 0,
                f"RankedSamplesConfig.reward_threshold: expected >= 0, got {self.reward_threshold}")
        require_one_of(self, "loss", LOSSES)
        require_one_of(self, "pairs", PAIRS)
        require_one_of(self, "reference", REFERENCES)
        require_one_of(self, "optimizer", OPTIMIZERS)
        require("lm" in self.model.heads, f"RankedSamplesConfig.model.heads: needs the 'lm' head, got {self.model.heads}")


@struct.dataclass
class RankedSamplesHParams:
    learning_rate: float = 1e-3
    beta: float = 0.1  # DPO's inverse temperature / IPO's tau (unused by best_of_n)


@struct.dataclass
class RankedSamplesState:
    params: Any
    ref_params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    hparams: RankedSamplesHParams


def make_train(
    config: RankedSamplesConfig,
    prompt_ids,
    reward_fn: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    init_params: Any = None,
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
) -> Trainer:
    """Build the trainer over the prompts ``[N_prompts, P]``; ``init_params`` is the initial policy and the
    frozen reference (default: a random init); ``eval_fn(params)`` gives ``evaluate``'s metrics."""
    prompts = np.asarray(prompt_ids)
    require(prompts.ndim == 2 and prompts.shape[1] >= 1, f"prompt_ids: expected [N_prompts, P >= 1], got {prompts.shape}")
    require(prompts.shape[0] >= config.prompts_per_update,
            f"prompt_ids: {prompts.shape[0]} prompts is fewer than RankedSamplesConfig.prompts_per_update = "
            f"{config.prompts_per_update}")
    require(0 <= int(prompts.min()) and int(prompts.max()) < config.model.vocab_size,
            f"prompt_ids: token ids must lie in [0, vocab_size = {config.model.vocab_size}); the largest is {int(prompts.max())}")
    num_prompts, P = prompts.shape
    N, K = config.samples_per_prompt, config.prompts_per_update
    prompts = jnp.asarray(prompts, jnp.int32)
    sampling = SamplingConfig(max_new_tokens=config.length, eos_id=config.eos_id, pad_id=config.pad_id)

    def init(key, hp: RankedSamplesHParams) -> RankedSamplesState:
        require_in_ranges(hp, {"learning_rate": POSITIVE, "beta": NON_NEGATIVE})
        init_key, key = jax.random.split(key)
        params = init_params if init_params is not None else model_lib.init_params(config.model, init_key)
        params = jax.tree.map(jnp.asarray, params)
        opt_state = make_optimizer(config, jnp.asarray(hp.learning_rate, jnp.float32)).init(float32_params(params))
        return RankedSamplesState(params=params, ref_params=params, opt_state=opt_state, key=key,
                                  step=jnp.zeros((), jnp.int32), hparams=hp)

    def sequence_logps(params, ids, attention, completion_mask):
        token_logps = completion_token_logps(params, config.model, ids, attention, P)
        return (token_logps * completion_mask).sum(axis=1).reshape(K, N)

    def update(state: RankedSamplesState):
        hp = state.hparams
        key, prompt_key, sample_key = jax.random.split(state.key, 3)
        rows = jax.random.choice(prompt_key, num_prompts, (K,), replace=False)
        batch_prompts = jnp.repeat(prompts[rows], N, axis=0)  # a prompt's N samples side by side
        generation = generate(state.params, config.model, batch_prompts, jnp.ones_like(batch_prompts), sample_key, sampling)
        completions, completion_mask = generation.tokens, generation.mask  # the mask is 1 up to and including EOS
        rewards = jnp.asarray(reward_fn(batch_prompts, completions), jnp.float32).reshape(K, N)
        ids = jnp.concatenate([batch_prompts, completions], axis=1)
        attention = jnp.concatenate([jnp.ones_like(batch_prompts), completion_mask], axis=1)
        logps_of = lambda params: sequence_logps(params, ids, attention, completion_mask)  # noqa: E731
        contrastive = config.loss != "best_of_n"
        # "sampler": the round's own policy, the reference of DNO's iteration t (pi_t)
        reference = state.ref_params if config.reference == "initial" else state.params
        ref_logps = jax.lax.stop_gradient(logps_of(reference)) if contrastive else None

        def loss_fn(params):
            logps = logps_of(params)
            if not contrastive:
                return preference.best_of_n_nll(logps, rewards), jnp.asarray(K, jnp.float32)
            return preference.ranked_pairs_dpo_loss(logps - ref_logps, rewards, hp.beta, "sigmoid" if config.loss == "dpo"
                                                    else "ipo", config.reward_threshold, config.pairs)

        tx = make_optimizer(config, hp.learning_rate)

        def step(carry, _):
            params, opt_state = carry
            (loss, pairs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            grads = float32_params(grads)
            updates, opt_state = tx.update(grads, opt_state, float32_params(params))
            return (optax.apply_updates(params, updates), opt_state), {"loss": loss, "pairs": pairs,
                                                                       "grad_norm": optax.global_norm(grads)}

        (params, opt_state), aux = jax.lax.scan(step, (state.params, state.opt_state), None, length=config.inner_steps)
        metrics = {"loss": aux["loss"][-1], "pairs": aux["pairs"][0], "grad_norm": aux["grad_norm"].mean(),
                   "reward": rewards.mean(), "best_reward": rewards.max(axis=1).mean()}
        return state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1), metrics

    def evaluate(state: RankedSamplesState, key) -> dict[str, jax.Array]:
        return {} if eval_fn is None else eval_fn(state.params)

    return Trainer(config=config, init=init, update=update, evaluate=evaluate, num_updates=config.num_updates,
                   env_steps_per_update=K * N)
