"""LM trainers: supervised fine-tuning, Bradley-Terry reward models, offline DPO family.

One ``make_train(config, data, ...) -> Trainer`` serves the three objectives, so
they share the host loop (progress, ``metrics.jsonl``, orbax checkpoints,
evaluation) and the RL trainers' shape: ``jax.vmap(trainer)(keys, hparams)``
trains several seeds or a sweep (e.g. RPO's ``eta``) in one compiled call.

    data = tokenize_preferences(...)                         # rljax.lm.data
    trainer = make_train(LMTrainConfig(model=cfg, objective="dpo",
                                       loss_types=("sigmoid", "sft")), data,
                         init_params=sft_params)
    state, metrics = jax.jit(trainer)(key, LMHParams(beta=0.1, loss_weights=(1.0, 0.005)))

The dataset lives on the device inside the state (as in PureJaxRL's on-device
rollouts); each update draws the next ``batch_size`` examples of a per-epoch
permutation, splits them into ``grad_accum_steps`` micro-batches and sums their
gradients in a ``lax.scan``. The micro-batch axis can be split over a mesh axis
``data`` (data parallelism: the parameters are replicated and XLA inserts the
gradient all-reduce).

Metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``,
``grad_norm``, ``learning_rate``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rljax.core.config import (NON_NEGATIVE, POSITIVE, ConfigError, require, require_in_ranges, require_one_of,
                                require_positive)
from rljax.core.trainer import Trainer
from rljax.lm import model as model_lib
from rljax.lm.model import LanguageModel, LMConfig
from rljax.losses import preference

OBJECTIVES = ("sft", "reward", "dpo")
OPTIMIZERS = ("adamw", "rmsprop", "sgd")  # rmsprop: Razin et al.'s DPO runs; adamw: TRL's default
REFERENCES = ("params", "precomputed")
SEQUENCE_FIELDS = {
    "sft": ("input_ids", "attention_mask", "completion_mask"),
    "reward": tuple(f"{side}_{f}" for side in ("chosen", "rejected") for f in ("input_ids", "attention_mask", "completion_mask")),
}
SEQUENCE_FIELDS["dpo"] = SEQUENCE_FIELDS["reward"]
# Optional per-pair numbers, read from the data (a PreferenceData's extras, or a dict's keys) when present:
# the reward model's Bradley-Terry margin (Llama 2; TRL's RewardTrainer "margin" column).
PAIR_VALUE_FIELDS = {"sft": (), "reward": ("margin",), "dpo": ()}
DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class LMTrainConfig:
    """Static settings. ``batch_size`` counts sequences (sft) or pairs (reward, dpo) per optimiser step."""

    model: LMConfig
    objective: str = "dpo"
    loss_types: tuple[str, ...] = ("sigmoid",)  # dpo only: TRL's loss_type list
    sft_normalization: str = "sum"  # the "sft" term of a DPO loss list; see rljax.losses.preference
    reference: str = "params"  # dpo: a frozen params copy, or log-probs computed once at init
    batch_size: int = 16
    grad_accum_steps: int = 1
    num_epochs: int = 1
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0  # 0: no clipping
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up of the learning rate
    data_parallel: bool = False  # split each micro-batch over all devices (mesh axis "data")
    prefix_sharing: bool = False  # dpo, reward: run each pair's prompt once (shared_prefix_apply)

    def __post_init__(self):
        require_one_of(self, "objective", OBJECTIVES)
        require_one_of(self, "optimizer", OPTIMIZERS)
        require_one_of(self, "reference", REFERENCES)
        require_positive(self, "batch_size", "grad_accum_steps", "num_epochs")
        require(
            self.batch_size % self.grad_accum_steps == 0,
            f"LMTrainConfig: batch_size = {self.batch_size} does not divide into grad_accum_steps = {self.grad_accum_steps}",
        )
        object.__setattr__(self, "loss_types", tuple(self.loss_types))
        # float16 gradients underflow without loss scaling, which this trainer does not do (bf16 has float32's range).
        require(
            "float16" not in (self.model.dtype, self.model.param_dtype),
            f"LMTrainConfig.model: float16 training needs loss scaling, which this trainer does not do; use bfloat16 "
            f"(got dtype = {self.model.dtype!r}, param_dtype = {self.model.param_dtype!r})",
        )
        require(
            not self.prefix_sharing or self.objective in ("dpo", "reward"),
            f"LMTrainConfig.prefix_sharing: only the pairwise objectives ('dpo', 'reward') share prompts, got "
            f"objective = {self.objective!r}",
        )
        if self.objective == "reward":
            require("reward" in self.model.heads, f"LMTrainConfig.model.heads: objective 'reward' needs a 'reward' head, got {self.model.heads}")
        else:
            require("lm" in self.model.heads, f"LMTrainConfig.model.heads: objective {self.objective!r} needs an 'lm' head, got {self.model.heads}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps


@struct.dataclass
class LMHParams:
    """Dynamic hyperparameters (vmappable). ``loss_weights``: one per ``loss_types`` entry (default 1 each).
    ``center_rewards_coefficient`` (reward models): TRL's weight of ``mean((r+ + r-)^2)``, which pulls the
    rewards toward zero mean (Eisenstein et al., 2023)."""

    learning_rate: float = 1e-4
    beta: float = 0.1
    label_smoothing: float = 0.0
    loss_weights: Any = None
    center_rewards_coefficient: float = 0.0


_HPARAM_RANGES = {
    "learning_rate": POSITIVE,
    "beta": POSITIVE,
    # robust DPO divides by 1 - 2 eps; cDPO's smoothing is a flip rate below 1/2
    "label_smoothing": (lambda v: (v >= 0) & (v < 0.5), "a number in [0, 1/2)"),
    "center_rewards_coefficient": NON_NEGATIVE,
}


def check_hparams(hp: LMHParams) -> None:
    """``ConfigError`` naming the field unless every concrete hyperparameter is in range (traced ones are
    skipped). ``loss_weights`` may be negative (gradient ascent on a term) and is not checked."""
    require_in_ranges(hp, _HPARAM_RANGES)


@struct.dataclass
class LMTrainState:
    """The whole LM training state, one pytree: params, optimiser state, data set and counters.

    ``ref_params``: the frozen DPO reference, or None. ``data``: ``[num_examples, seq_len]`` int32 token arrays
    (plus ``[num_examples]`` reference log-probs when precomputed). ``key`` seeds the per-epoch permutations;
    ``step`` counts updates.
    """

    params: Any
    opt_state: Any
    ref_params: Any  # None unless objective == "dpo" and reference == "params"
    data: dict[str, jax.Array]  # the training set (plus precomputed reference log-probs)
    key: jax.Array
    step: jax.Array
    hparams: LMHParams


@dataclasses.dataclass(frozen=True)
class LMTrainer(Trainer):
    """A :class:`Trainer` plus ``init_from(key, hparams, params=None, data=None)``."""

    init_from: Callable[..., LMTrainState]


def num_examples(data: Mapping[str, Any]) -> int:
    """Rows in a dict of equally long arrays."""
    return len(next(iter(data.values())))


def _as_arrays(data, fields: tuple[str, ...], name: str) -> dict[str, np.ndarray]:
    if dataclasses.is_dataclass(data):
        data = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    missing = [f for f in fields if f not in data]
    require(not missing, f"{name}: missing field(s) {missing}; expected {list(fields)}")
    arrays = {f: np.asarray(data[f]) for f in fields}
    shapes = {f: a.shape for f, a in arrays.items()}
    first = arrays[fields[0]].shape
    require(
        all(a.ndim == 2 and a.shape == first for a in arrays.values()),
        f"{name}: every field must be [num_examples, seq_len] with one shape; got {shapes}",
    )
    return {f: a.astype(np.int32) for f, a in arrays.items()}


def _pair_values(data, fields: tuple[str, ...], num: int, name: str) -> dict[str, np.ndarray]:
    """The ``fields`` that ``data`` holds (in ``extras`` for a PreferenceData), as finite float32 ``[num]``."""
    if dataclasses.is_dataclass(data):
        data = getattr(data, "extras", {})
    out = {}
    for field in fields:
        if field not in data:
            continue
        value = np.asarray(data[field], np.float32)
        require(value.shape == (num,), f"{name}[{field!r}]: expected one number per pair, shape {(num,)}, got {value.shape}")
        if not np.isfinite(value).all():
            row = int(np.flatnonzero(~np.isfinite(value))[0])
            raise ConfigError(f"{name}[{field!r}]: expected finite numbers, row {row} is {value[row]}")
        out[field] = value
    return out


def sequence_logps(params, config: LMConfig, input_ids, attention_mask, completion_mask, logits_from: int = 0):
    """Summed completion log-prob and completion length of each row: ([B], [B]).

    ``logits_from`` (static): the first position whose logits can matter (the
    earliest completion token of any row, minus one); earlier ones are skipped.
    """
    out = LanguageModel(config).apply(
        {"params": params}, input_ids, attention_mask, logits_from=logits_from, compute_logits=not config.logits_chunk
    )  # fmt: skip
    scores = out.hidden[:, logits_from:] if config.logits_chunk else out.logits
    per_token = _token_logps(params, config, scores, input_ids[:, logits_from:])
    mask = completion_mask[:, logits_from:]
    return preference.sequence_logps(per_token, mask), preference.completion_lengths(mask)


def completion_exact_match(logits, input_ids, completion_mask):
    """[B] bool: at every completion position the argmax of ``logits`` [B, T, V] (given the gold prefix) is the
    gold token. For a fixed gold completion this equals greedy decoding reproducing it: if every argmax is
    right, greedy decoding emits the gold tokens; if one is wrong, it goes wrong at the first such position."""
    hit = jnp.argmax(logits[:, :-1], axis=-1) == input_ids[:, 1:]
    return jnp.all(hit | (completion_mask[:, 1:] == 0), axis=1)


def _token_logps(params, config: LMConfig, scores, input_ids):
    """Per-token log-probs [B, T-1] from the logits [B, T, V], or from the hidden states [B, T, H] in
    chunks of ``config.logits_chunk`` positions (:func:`rljax.lm.model.chunked_token_logps`)."""
    if config.logits_chunk:
        weight = model_lib.unembedding(params, config)
        return model_lib.chunked_token_logps(scores, weight, input_ids, config.logits_chunk, config.dtype)
    return preference.token_logps(scores, input_ids)


def both_sides(batch, field: str):
    """``[chosen; rejected]`` rows of ``field``: [B, ...] each -> [2B, ...] (TRL's concatenated batch)."""
    return jnp.concatenate([batch[f"chosen_{field}"], batch[f"rejected_{field}"]])


def shared_prefix_apply(params, config: LMConfig, batch, shared_prefix: int, compute_logits: bool = True):
    """The model on the 2B rows ``[chosen; rejected]`` with their common prompt run once: ``(prefix, rest)``.

    Prefix sharing (Wang and Hegde 2024, "Accelerating Direct Preference Optimization with Prefix
    Sharing"): the first ``shared_prefix`` = m tokens, the same in each pair's two rows and
    scored in neither, go through the model once per pair (``prefix``: [B, m], logits of
    position m - 1 only); both sides' remaining tokens (``rest``: [2B, T - m]) then attend to
    its cached keys and values. The paper packs prompt, chosen and rejected into one row under
    a block-sparse mask; the KV cache gives each completion the same keys and values to attend
    to. The same function as the concatenated forward, up to rounding, for B * m fewer token
    positions; ``rest.rewards`` are the rows' rewards (each row's last token is past the prompt).
    """
    model = LanguageModel(config)
    m = shared_prefix
    B, T = batch["chosen_input_ids"].shape
    prefix = model.apply(
        {"params": params}, batch["chosen_input_ids"][:, :m], batch["chosen_attention_mask"][:, :m],
        cache=model_lib.KVCache.init(config, B, m), logits_from=m - 1, compute_logits=compute_logits,
    )  # fmt: skip
    # One copy of the prompt's keys and values per side, with T - m empty slots for the rest's.
    twice = lambda kv: jnp.concatenate([kv, kv], axis=1)  # noqa: E731  [L, B, m, K, D] -> [L, 2B, m, K, D]
    cache = jax.tree.map(lambda kv: jnp.pad(twice(kv), ((0, 0), (0, 0), (0, T - m), (0, 0), (0, 0))), prefix.cache)
    ids = both_sides(batch, "input_ids")
    rest = model.apply(
        {"params": params}, ids[:, m:], both_sides(batch, "attention_mask"), cache=cache, cache_index=m,
        compute_logits=compute_logits,
    )  # fmt: skip
    return prefix, rest


def shared_prefix_pair_logps(params, config: LMConfig, batch, shared_prefix: int):
    """:func:`sequence_logps` of the 2B rows ``[chosen; rejected]`` with their common prompt run once
    (:func:`shared_prefix_apply`)."""
    prefix, rest = shared_prefix_apply(params, config, batch, shared_prefix, compute_logits=not config.logits_chunk)
    m = shared_prefix
    # Logits (or hidden states) of positions m - 1 (the prompt's last token, which predicts token m) .. T - 1.
    first, others = (prefix.hidden[:, m - 1 :], rest.hidden) if config.logits_chunk else (prefix.logits, rest.logits)
    scores = jnp.concatenate([jnp.concatenate([first, first]), others], axis=1)
    per_token = _token_logps(params, config, scores, both_sides(batch, "input_ids")[:, m - 1 :])
    mask = both_sides(batch, "completion_mask")[:, m - 1 :]
    return preference.sequence_logps(per_token, mask), preference.completion_lengths(mask)


def _pair_logps(params, config: LMConfig, batch, logits_from: int = 0, shared_prefix: int = 0):
    """Chosen and rejected rows in one forward pass of 2B rows (TRL's concatenated forward), or with
    their first ``shared_prefix`` tokens run once per pair (:func:`shared_prefix_pair_logps`) when > 0."""
    if shared_prefix:
        logps, lengths = shared_prefix_pair_logps(params, config, batch, shared_prefix)
    else:
        ids, attention, completion = (both_sides(batch, f) for f in ("input_ids", "attention_mask", "completion_mask"))
        logps, lengths = sequence_logps(params, config, ids, attention, completion, logits_from)
    B = batch["chosen_input_ids"].shape[0]
    return logps[:B], logps[B:], lengths[:B], lengths[B:]


def _pair_rewards(params, config: LMConfig, batch, shared_prefix: int = 0):
    """Chosen and rejected rewards ([B] or [B, k] each): one forward pass of the 2B rows, or with their
    first ``shared_prefix`` tokens run once per pair (:func:`shared_prefix_apply`) when > 0."""
    if shared_prefix:
        rewards = shared_prefix_apply(params, config, batch, shared_prefix)[1].rewards
    else:
        ids, attention = both_sides(batch, "input_ids"), both_sides(batch, "attention_mask")
        rewards = LanguageModel(config).apply({"params": params}, ids, attention).rewards
    B = batch["chosen_input_ids"].shape[0]
    return rewards[:B], rewards[B:]


def first_completion_position(arrays: Mapping[str, np.ndarray]) -> int:
    """The earliest position of any row's completion (its first ``completion_mask`` token)."""
    return int(min(np.argmax(a > 0, axis=1).min() for f, a in arrays.items() if f.endswith("completion_mask")))


def first_scored_position(arrays: Mapping[str, np.ndarray]) -> int:
    """The earliest position whose logits any row scores: its first completion token, minus one."""
    return max(first_completion_position(arrays) - 1, 0)


def shared_prefix_length(arrays: Mapping[str, np.ndarray]) -> int:
    """The prompt prefix that prefix sharing runs once per pair: every position before any row's
    completion. Raises ConfigError, naming the first row, where a pair's two rows differ there."""
    m = first_completion_position(arrays)
    require(m >= 1, "LMTrainConfig.prefix_sharing: a completion starts at position 0, so no prompt prefix is shared")
    for field in ("input_ids", "attention_mask"):
        chosen, rejected = arrays[f"chosen_{field}"][:, :m], arrays[f"rejected_{field}"][:, :m]
        differ = np.flatnonzero((chosen != rejected).any(axis=1))
        if differ.size:
            row = differ[0]
            raise ConfigError(
                f"LMTrainConfig.prefix_sharing: data['chosen_{field}'] and data['rejected_{field}'] must agree on the "
                f"{m} positions before the first completion; row {row} differs: {chosen[row].tolist()} vs {rejected[row].tolist()}"
            )
    return m


def make_loss(config: LMTrainConfig, logits_from: int = 0, shared_prefix: int = 0) -> Callable:
    """``loss(params, ref_params, batch, hp, norm) -> (scalar, aux)`` for one micro-batch.

    ``norm`` is the whole minibatch's denominator (examples, or completion tokens for
    SFT), so summing micro-batch gradients gives exactly the minibatch gradient.
    ``shared_prefix`` (dpo, reward): see :func:`shared_prefix_apply`.
    """
    model = config.model

    def sft_loss(params, ref_params, batch, hp, norm):
        logps, _ = sequence_logps(
            params, model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], logits_from
        )
        # Token-mean NLL over the minibatch's completion tokens (TRL's SFTTrainer).
        loss = -logps.sum() / norm
        return loss, {"loss": loss, "nll_per_token": loss}

    def reward_loss(params, ref_params, batch, hp, norm):
        chosen, rejected = _pair_rewards(params, model, batch, shared_prefix)
        B = chosen.shape[0]
        loss, aux = preference.bradley_terry_loss(chosen, rejected, margin=batch.get("margin"),
                                                  center_rewards_coefficient=hp.center_rewards_coefficient)
        scale = B / norm  # micro-batch mean -> share of the minibatch mean
        return loss * scale, {k: v * scale for k, v in aux.items()} | {"loss": loss * scale}

    def dpo_loss(params, ref_params, batch, hp, norm):
        chosen, rejected, chosen_len, _ = _pair_logps(params, model, batch, logits_from, shared_prefix)
        if config.reference == "precomputed":
            ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected, _, _ = _pair_logps(ref_params, model, batch, logits_from, shared_prefix)
        loss, aux = preference.dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, chosen_len,
            preference.PreferenceHParams(beta=hp.beta, label_smoothing=hp.label_smoothing),
            loss_types=config.loss_types, loss_weights=hp.loss_weights,
            sft_normalization=config.sft_normalization,
        )  # fmt: skip
        scale = chosen.shape[0] / norm
        return loss * scale, {k: v * scale for k, v in aux.items()} | {"loss": loss * scale}

    return {"sft": sft_loss, "reward": reward_loss, "dpo": dpo_loss}[config.objective]


def _lr_at(config: LMTrainConfig, hp: LMHParams, step):
    if config.warmup_steps <= 0:
        return jnp.asarray(hp.learning_rate, jnp.float32)
    return hp.learning_rate * jnp.minimum(1.0, (step + 1) / config.warmup_steps)


def make_optimizer(config: LMTrainConfig, learning_rate) -> optax.GradientTransformation:
    """AdamW, RMSprop (PyTorch's defaults) or SGD with an injected (traced) learning rate; gradients clipped at ``max_grad_norm`` when > 0."""
    # inject_hyperparams keeps the learning rate in the optimiser state, so it is a
    # traced value (vmappable per seed) and the warm-up can set it every step.
    if config.optimizer == "adamw":
        tx = optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate, weight_decay=config.weight_decay)
    else:  # PyTorch's RMSprop defaults (alpha 0.99, eps 1e-8), as the papers that use it ran it
        base = {"rmsprop": lambda learning_rate: optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False), "sgd": optax.sgd}
        tx = optax.inject_hyperparams(base[config.optimizer])(learning_rate=learning_rate)
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
    return tx


def float32_params(params):
    """The optimiser sees float32 copies of the params: bf16 moments would round Adam's b2 = 0.999
    to 1.0 (its bias correction then divides by zero) and lose small updates."""
    return jax.tree.map(lambda x: x.astype(jnp.float32), params)


def _set_lr(opt_state, lr):
    # The injected state itself (max_grad_norm = 0) or the last element of the clipping chain; the
    # injected state is a NamedTuple too, so test for its field, not for tuple.
    inner = opt_state if hasattr(opt_state, "hyperparams") else opt_state[-1]
    inner.hyperparams["learning_rate"] = lr
    return opt_state


def make_train(
    config: LMTrainConfig,
    data: Mapping[str, Any],
    *,
    init_params: Any = None,
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
) -> LMTrainer:
    """Build the trainer. ``data``: a dict (or dataclass) of [N, T] int arrays with the
    fields of ``SEQUENCE_FIELDS[config.objective]``, and optionally the per-pair numbers of
    ``PAIR_VALUE_FIELDS`` (a reward model's ``margin``: in a PreferenceData's ``extras``, or a
    key of the dict). ``init_params``: start (and the DPO reference) from these params instead
    of a random init. ``eval_fn(params)``: extra scalar metrics for ``evaluate`` (e.g. an exact
    expected gold reward)."""
    arrays = _as_arrays(data, SEQUENCE_FIELDS[config.objective], "data")
    N = num_examples(arrays)
    pair_values = _pair_values(data, PAIR_VALUE_FIELDS[config.objective], N, "data")
    require(
        N >= config.batch_size,
        f"data: {N} examples is fewer than one batch (LMTrainConfig.batch_size = {config.batch_size})",
    )
    T = arrays[SEQUENCE_FIELDS[config.objective][0]].shape[1]
    require(
        T <= config.model.max_position_embeddings,
        f"data: sequence length {T} exceeds the model's max_position_embeddings = {config.model.max_position_embeddings}",
    )
    largest = max(int(arrays[f].max()) for f in arrays if f.endswith("input_ids"))
    require(
        0 <= min(int(arrays[f].min()) for f in arrays if f.endswith("input_ids")) and largest < config.model.vocab_size,
        f"data: token ids must lie in [0, vocab_size = {config.model.vocab_size}); the largest is {largest}",
    )
    steps_per_epoch = N // config.batch_size
    num_updates = steps_per_epoch * config.num_epochs
    logits_from = first_scored_position(arrays)
    shared_prefix = shared_prefix_length(arrays) if config.prefix_sharing else 0
    loss_fn = make_loss(config, logits_from, shared_prefix)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    use_ref_params = config.objective == "dpo" and config.reference == "params"
    micro_sharding = None
    if config.data_parallel:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        require(
            config.micro_batch_size % mesh.devices.size == 0,
            f"LMTrainConfig: micro-batch of {config.micro_batch_size} does not split over {mesh.devices.size} devices",
        )
        micro_sharding = NamedSharding(mesh, P(DATA_AXIS))

    def default_weights(hp: LMHParams) -> LMHParams:
        if hp.loss_weights is None:
            return hp.replace(loss_weights=jnp.ones(len(config.loss_types), jnp.float32))
        return hp.replace(loss_weights=jnp.asarray(hp.loss_weights, jnp.float32))

    def precompute_reference(params, device_data):
        """Reference log-probs of every pair, computed once (TRL's precompute_ref_log_probs)."""
        size = config.micro_batch_size
        padded = -(-N // size) * size  # pad by repeating the first rows, then drop them again
        rows = jnp.arange(padded) % N
        chunks = jax.tree.map(lambda x: x[rows].reshape((padded // size, size) + x.shape[1:]), device_data)
        chosen, rejected, _, _ = jax.lax.map(lambda b: _pair_logps(params, config.model, b, logits_from, shared_prefix), chunks)
        return {"ref_chosen_logps": chosen.reshape(-1)[:N], "ref_rejected_logps": rejected.reshape(-1)[:N]}

    def init_from(key, hp: LMHParams, params=None, data=None) -> LMTrainState:
        """``init`` with other starting params (also the DPO reference) and/or another data
        set of the same shapes. The arguments may be traced, so one compiled program
        trains many seeds' or pairs' data sets (``jax.vmap`` or a loop over them). Such
        data must lay out its rows as ``make_train``'s did: no completion token before
        its first one (and, with prefix sharing, both rows of a pair equal before it)."""
        check_hparams(hp)
        hp = default_weights(hp)
        init_key, key = jax.random.split(key)
        if params is None:
            params = init_params if init_params is not None else model_lib.init_params(config.model, init_key)
        params = jax.tree.map(jnp.asarray, params)
        data = arrays | pair_values if data is None else data
        for field, array in (arrays | pair_values).items():
            got = jnp.shape(data[field]) if field in data else "missing"
            require(got == array.shape, f"init_from: data[{field!r}] must be {array.shape} as in make_train, got {got}")
        device_data = {k: jnp.asarray(data[k], jnp.int32) for k in arrays}
        device_data |= {k: jnp.asarray(data[k], jnp.float32) for k in pair_values}
        if config.objective == "dpo" and config.reference == "precomputed":
            device_data |= jax.lax.stop_gradient(precompute_reference(params, device_data))
        opt_state = make_optimizer(config, _lr_at(config, hp, 0)).init(float32_params(params))
        return LMTrainState(
            params=params, opt_state=opt_state, ref_params=params if use_ref_params else None,
            data=device_data, key=key, step=jnp.zeros((), jnp.int32), hparams=hp,
        )  # fmt: skip

    def init(key, hp: LMHParams) -> LMTrainState:
        return init_from(key, hp)

    def minibatch(state: LMTrainState):
        """The next ``batch_size`` rows of this epoch's permutation, as [accum, micro, ...]."""
        epoch, within = state.step // steps_per_epoch, state.step % steps_per_epoch
        order = jax.random.permutation(jax.random.fold_in(state.key, epoch), N)
        rows = jax.lax.dynamic_slice_in_dim(order, within * config.batch_size, config.batch_size)
        batch = jax.tree.map(lambda x: x[rows], state.data)
        return jax.tree.map(lambda x: x.reshape((config.grad_accum_steps, config.micro_batch_size) + x.shape[1:]), batch)

    def normaliser(batch) -> jax.Array:
        if config.objective == "sft":  # completion tokens that are predicted: mask[:, 1:]
            return jnp.maximum(batch["completion_mask"][..., 1:].sum(), 1).astype(jnp.float32)
        return jnp.asarray(config.batch_size, jnp.float32)

    def update(state: LMTrainState):
        hp = state.hparams
        batch = minibatch(state)
        norm = normaliser(batch)

        def micro_step(grads, micro):
            if micro_sharding is not None:
                micro = jax.lax.with_sharding_constraint(micro, jax.tree.map(lambda _: micro_sharding, micro))
            (_, aux), g = grad_fn(state.params, state.ref_params, micro, hp, norm)
            return jax.tree.map(jnp.add, grads, g), aux

        # Gradients are summed and the optimiser runs in float32; apply_updates casts back to param_dtype.
        params32 = float32_params(state.params)
        grads, aux = jax.lax.scan(micro_step, jax.tree.map(jnp.zeros_like, params32), batch)
        metrics = jax.tree.map(lambda x: x.sum(axis=0), aux)  # each micro's share already scaled
        lr = _lr_at(config, hp, state.step)
        tx = make_optimizer(config, lr)
        opt_state = _set_lr(state.opt_state, lr)
        updates, opt_state = tx.update(grads, opt_state, params32)
        params = optax.apply_updates(state.params, updates)
        metrics |= {"grad_norm": optax.global_norm(grads), "learning_rate": lr}
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

    def evaluate(state: LMTrainState, key) -> dict[str, jax.Array]:
        return {} if eval_fn is None else eval_fn(state.params)

    return LMTrainer(
        config=config, init=init, update=update, evaluate=evaluate,
        num_updates=num_updates, env_steps_per_update=config.batch_size, init_from=init_from,
    )  # fmt: skip
