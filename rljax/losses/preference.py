"""Preference losses: the DPO family, RPO, Bradley-Terry reward models, CHES.

Pure functions over per-token log-probs and masks, in TRL's vocabulary
(``loss_type`` lists with ``loss_weights``, ``rewards/*`` metrics). Shapes:

* ``input_ids``, ``completion_mask``: [B, T]; the mask is 1 on response tokens
  and 0 on prompt and padding.
* per-token log-probs: [B, T-1], position t scores token t+1, so they line up
  with ``completion_mask[:, 1:]``.
* sequence log-probs: [B], a SUM over completion tokens (as TRL's DPO does).

Reference log-probs are constants (``jax.lax.stop_gradient``). ``aux`` is a flat
dict of scalars.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class PreferenceHParams:
    """Dynamic hyperparameters of the DPO family (a pytree, so they can be vmapped)."""

    beta: float = 0.1  # inverse temperature of the implicit reward beta * log(pi / pi_ref)
    label_smoothing: float = 0.0  # eps: assumed label-flip rate (cDPO, robust DPO); robust needs eps < 1/2


# ---------------------------------------------------------------------------
# Log-probs
# ---------------------------------------------------------------------------


def token_logps(logits, input_ids):
    """log pi(ids[:, t+1] | ids[:, :t+1]) = log_softmax(logits[:, t])[ids[:, t+1]] -> [B, T-1].

    ``logits``: [B, T, V] (bf16/f16 are computed in float32, float64 stays float64),
    ``input_ids``: [B, T].
    """
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"token_logps: expected logits [B, T, V] and input_ids [B, T] with the same B, T; "
            f"got logits {logits.shape} and input_ids {input_ids.shape}"
        )
    logits = logits[:, :-1].astype(jnp.promote_types(logits.dtype, jnp.float32))
    targets = input_ids[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    # picked - logsumexp avoids materialising the [B, T-1, V] log-softmax.
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_logps(per_token_logps, completion_mask):
    """log pi(y | x) = sum_t per_token_logps[:, t] * completion_mask[:, t+1] -> [B]."""
    mask = completion_mask[:, 1:]
    if mask.shape != per_token_logps.shape:
        raise ValueError(
            f"sequence_logps: completion_mask[:, 1:] has shape {mask.shape}, expected the shape of "
            f"per_token_logps {per_token_logps.shape} (completion_mask is [B, T], log-probs [B, T-1])"
        )
    return jnp.where(mask.astype(bool), per_token_logps, 0.0).sum(axis=-1)


def completion_lengths(completion_mask):
    """Number of scored completion tokens, sum_t completion_mask[:, t+1] -> [B] float32."""
    return completion_mask[:, 1:].astype(jnp.float32).sum(axis=-1)


# ---------------------------------------------------------------------------
# Per-example losses of the log-ratio difference
#   delta = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-)),  all [B]
# ---------------------------------------------------------------------------


def sigmoid(delta, beta, label_smoothing=0.0):
    """DPO (Rafailov et al., 2023, eq. 7): -log sigma(beta delta).

    With label smoothing eps, conservative DPO (cDPO; Mitchell, 2023):
    -(1 - eps) log sigma(beta delta) - eps log sigma(-beta delta).
    """
    z = beta * delta
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)


def robust(delta, beta, label_smoothing=0.0):
    """Provably robust DPO (Chowdhury et al., 2024), an unbiased loss under flip rate eps < 1/2:

    (-(1 - eps) log sigma(beta delta) + eps log sigma(-beta delta)) / (1 - 2 eps).
    """
    z = beta * delta
    eps = label_smoothing
    return (-(1.0 - eps) * jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1.0 - 2.0 * eps)


def hinge(delta, beta):
    """SLiC-HF calibration loss (Zhao et al., 2023) as in TRL: max(0, 1 - beta delta)."""
    return jax.nn.relu(1.0 - beta * delta)


def ipo(delta, beta):
    """IPO (Azar et al., 2023, eq. 17): (delta - 1/(2 beta))^2, beta playing the paper's tau.

    The paper's h is the log-ratio of whole sequences, so ``delta`` here is built
    from SUMMED log-probs. TRL's ``ipo`` instead divides each sequence log-prob by
    its length (token-mean) first; that variant is deliberately not offered.
    """
    return (delta - 1.0 / (2.0 * beta)) ** 2


SFT_NORMALIZATIONS = ("sum", "mean", "seq_mean")


def sft(policy_chosen_logps, chosen_lengths=None, normalization="sum"):
    """NLL of the chosen completion, per example [B] (the SFT term of RPO, Liu et al., 2024).

    ``normalization``:

    * ``"sum"`` (default): -log pi(y+ | x), the sequence NLL. This is RPO's
      objective in the paper's main experiments: the official code
      (YSLIU627/Regularized-Preference-Optimization, alignment-handbook
      ``rpo_trainer.py``) adds ``-eta * beta * policy_chosen_logps`` with
      summed log-probs; its README calls this the "cumulative SFT loss".
    * ``"mean"``: TRL's ``sft`` loss type, the cross-entropy averaged over all
      chosen completion tokens of the batch, sum_b -log pi(y+_b) / sum_b L_b,
      repeated for every example (so the batch mean is that value). Under data
      sharding it is the token mean of each shard.
    * ``"seq_mean"``: -log pi(y+ | x) / L+ averaged per sequence, the "average
      SFT loss" of the paper's Appendix F (official OpenRLHF code).
    """
    if normalization not in SFT_NORMALIZATIONS:
        raise ValueError(f"sft: unknown normalization {normalization!r}; known ones are {list(SFT_NORMALIZATIONS)}")
    nll = -policy_chosen_logps
    if normalization == "sum":
        return nll
    if chosen_lengths is None:
        raise ValueError(f"sft: normalization {normalization!r} needs chosen_lengths (completion token counts, [B])")
    lengths = jnp.maximum(chosen_lengths.astype(nll.dtype), 1.0)
    if normalization == "seq_mean":
        return nll / lengths
    return jnp.broadcast_to(nll.sum() / lengths.sum(), nll.shape)


LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo", "sft")


def rpo_loss_types(eta, beta):
    """RPO (Liu et al., 2024): L_DPO + eta * beta * E[-log pi(y+ | x)].

    Returns ``(loss_types, loss_weights)`` for :func:`dpo_loss` with the default
    ``sft_normalization="sum"``. The SFT term is scaled by eta * beta as in the
    official code of the paper's main experiments (``losses -= policy_chosen_logps
    * self.beta * self.eta``; the equation itself was not checked against the
    paper text). Their Appendix F / OpenRLHF variant is ``sft_normalization=
    "seq_mean"`` with weight eta (no beta). TRL's recipe is instead ``loss_type=["sigmoid", "sft"]``,
    ``loss_weights=[1.0, eta]`` on the token-mean NLL (``sft_normalization="mean"``),
    a different scale.
    """
    return ("sigmoid", "sft"), (1.0, eta * beta)


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    chosen_lengths,
    hp: PreferenceHParams,
    loss_types: Sequence[str] = ("sigmoid",),
    loss_weights: Sequence | None = None,
    sft_normalization: str = "sum",
):
    """Weighted sum of DPO-family losses, batch mean: L = mean_b sum_k w_k l_k(b).

    All log-probs are [B] sequence sums (:func:`sequence_logps`); ``chosen_lengths``
    [B] (:func:`completion_lengths`) is only read by ``sft`` with a non-"sum"
    normalization and may be None otherwise. ``loss_weights`` defaults to 1.0 per
    type (weights may be arrays, e.g. vmapped). Returns ``(loss, aux)``; aux holds
    TRL's metrics (rewards are beta * log(pi / ref)) and the unweighted batch mean
    of each term as ``loss/<type>``.
    """
    loss_types = tuple(loss_types)
    if not loss_types:
        raise ValueError(f"dpo_loss: loss_types is empty; choose from {list(LOSS_TYPES)}")
    unknown = [t for t in loss_types if t not in LOSS_TYPES]
    if unknown:
        raise ValueError(f"dpo_loss: unknown loss type(s) {unknown}; known ones are {list(LOSS_TYPES)}")
    if loss_weights is None:
        loss_weights = (1.0,) * len(loss_types)
    if len(loss_weights) != len(loss_types):
        raise ValueError(
            f"dpo_loss: loss_weights has {len(loss_weights)} entries but loss_types has {len(loss_types)}; "
            "give one weight per loss type"
        )

    ref_chosen_logps = jax.lax.stop_gradient(ref_chosen_logps)
    ref_rejected_logps = jax.lax.stop_gradient(ref_rejected_logps)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios

    beta, eps = hp.beta, hp.label_smoothing
    terms = {
        "sigmoid": lambda: sigmoid(delta, beta, eps),
        "robust": lambda: robust(delta, beta, eps),
        "hinge": lambda: hinge(delta, beta),
        "ipo": lambda: ipo(delta, beta),
        "sft": lambda: sft(policy_chosen_logps, chosen_lengths, sft_normalization),
    }
    total = jnp.zeros_like(delta)
    aux = {}
    for loss_type, weight in zip(loss_types, loss_weights):
        per_example = terms[loss_type]()
        total = total + weight * per_example
        aux[f"loss/{loss_type}"] = per_example.mean()
    loss = total.mean()

    chosen_rewards = jax.lax.stop_gradient(beta * chosen_logratios)
    rejected_rewards = jax.lax.stop_gradient(beta * rejected_logratios)
    aux.update({
        "loss": loss,
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).astype(jnp.float32).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": jax.lax.stop_gradient(policy_chosen_logps).mean(),
        "logps/rejected": jax.lax.stop_gradient(policy_rejected_logps).mean(),
    })
    return loss, aux


# ---------------------------------------------------------------------------
# Preferences among N samples per prompt (Tajwar et al., 2024)
# ---------------------------------------------------------------------------


def ranked_pairs(rewards, threshold=0.0, pairs="all"):
    """The ordered pairs of a prompt's N samples that the reward ranks: ``mask[p, i, j]`` [P, N, N] is true when
    sample i is preferred to sample j, from rewards [P, N]:

    * ``"all"``: every pair with ``r[p, i] - r[p, j] > threshold`` (ties and near-ties give none); with
      ``threshold`` 0, all N (N - 1) / 2 pairs of distinct rewards, as Tajwar et al.'s code builds them;
    * ``"best_worst"``: only the best sample over the worst (the first of tied maxima and minima), when they
      differ by more than ``threshold``: DNO's large-margin pair (Rosset et al., 2024).
    """
    rewards = jnp.asarray(rewards)
    margin = rewards[:, :, None] - rewards[:, None, :]
    if pairs == "all":
        return margin > threshold
    if pairs == "best_worst":
        n = rewards.shape[1]
        best = jax.nn.one_hot(jnp.argmax(rewards, axis=1), n, dtype=bool)
        worst = jax.nn.one_hot(jnp.argmin(rewards, axis=1), n, dtype=bool)
        return best[:, :, None] & worst[:, None, :] & (margin > threshold)
    raise ValueError(f"ranked_pairs: unknown pairs {pairs!r}; known ones are ['all', 'best_worst']")


def ranked_pairs_dpo_loss(logratios, rewards, beta, loss_type="sigmoid", threshold=0.0, pairs="all"):
    """A DPO-family loss averaged over the ranked pairs of each prompt's samples (:func:`ranked_pairs`; scalar,
    and the number of pairs): ``logratios`` [P, N] are ``log pi(y) - log pi_ref(y)`` of the samples (sequence
    sums), ``rewards`` [P, N]; ``loss_type`` ``"sigmoid"`` (DPO) or ``"ipo"``. No pair: loss 0."""
    terms = {"sigmoid": sigmoid, "ipo": ipo}
    if loss_type not in terms:
        raise ValueError(f"ranked_pairs_dpo_loss: unknown loss_type {loss_type!r}; known ones are {list(terms)}")
    mask = ranked_pairs(rewards, threshold, pairs).astype(jnp.float32)
    delta = logratios[:, :, None] - logratios[:, None, :]  # [P, N, N]: winner i minus loser j
    count = mask.sum()
    return (terms[loss_type](delta, beta) * mask).sum() / jnp.maximum(count, 1.0), count


def group_win_rates(preferences):
    """Each sample's mean win probability against the other N - 1 samples of its prompt (DNO's score), [P, N],
    from ``preferences[p, i, j] = P(y_i > y_j)`` [P, N, N] (a preference oracle; the diagonal is ignored)."""
    n = preferences.shape[-1]
    off_diagonal = 1.0 - jnp.eye(n, dtype=preferences.dtype)
    return (preferences * off_diagonal).sum(axis=-1) / (n - 1)


def best_of_n_nll(logps, rewards):
    """Best-of-N SFT (scalar): ``-log pi`` of each prompt's highest-reward sample, averaged over prompts
    (``logps``, ``rewards``: [P, N]; the first of tied maxima). Maximum likelihood: no negative gradient."""
    best = jnp.argmax(jnp.asarray(rewards), axis=1)
    return -jnp.take_along_axis(logps, best[:, None], axis=1).mean()


# ---------------------------------------------------------------------------
# Reward models
# ---------------------------------------------------------------------------


def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=None, center_rewards_coefficient=0.0):
    """Bradley-Terry reward-model loss as in TRL's RewardTrainer, rewards [B]:

    mean(-log sigma(r+ - r- - margin)) + c * mean((r+ + r-)^2).

    ``margin`` (optional, [B] or scalar) is Llama 2's preference-strength margin;
    the centring term (Eisenstein et al., 2023) pulls rewards toward zero mean.
    """
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    loss = -jax.nn.log_sigmoid(logits).mean()
    loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    aux = {
        "accuracy": (diff > 0).astype(jnp.float32).mean(),
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "margin": diff.mean(),
    }
    return loss, aux


ENSEMBLE_OBJECTIVES = ("mean", "wco", "uwo")


def ensemble_reward(rewards, objective="mean", uwo_coefficient=0.5):
    """One reward from an ensemble's rewards [K, ...] -> [...] (Coste et al., ICLR 2024):

    * ``"mean"``: mean_k r_k;
    * ``"wco"`` (worst-case optimisation): min_k r_k;
    * ``"uwo"`` (uncertainty-weighted optimisation): mean_k r_k - lambda * Var_k r_k,
      with ``lambda = uwo_coefficient`` and the population variance (divided by K),
      as the paper's best-of-n code (``np.var``); the paper uses lambda 0.5 for
      best-of-n and 0.1 for PPO.

    The members' rewards are combined as they come, without per-member
    normalisation, as in the official code.
    """
    if objective not in ENSEMBLE_OBJECTIVES:
        raise ValueError(f"ensemble_reward: unknown objective {objective!r}; known ones are {list(ENSEMBLE_OBJECTIVES)}")
    rewards = jnp.asarray(rewards)
    if rewards.ndim == 0 or rewards.shape[0] < 1:
        raise ValueError(f"ensemble_reward: rewards must be [K, ...] with K >= 1 members, got shape {rewards.shape}")
    if objective == "wco":
        return rewards.min(axis=0)
    mean = rewards.mean(axis=0)
    if objective == "mean":
        return mean
    return mean - uwo_coefficient * rewards.var(axis=0)


# ---------------------------------------------------------------------------
# CHES: centered hidden embedding similarity (Razin et al., ICLR 2025, "Unintentional Unalignment")
# ---------------------------------------------------------------------------


def _summed_hidden(hidden, completion_mask):
    """sum of h[:, t] over the positions whose NEXT token is a response token -> ([B, H], L [B]).

    Those are the positions from the last prompt token up to, but not
    including, the final response token (mask m[t] = completion_mask[t+1]).
    """
    if hidden.ndim != 3 or hidden.shape[:2] != completion_mask.shape:
        raise ValueError(
            f"ches_score: expected hidden [B, T, H] and completion_mask [B, T] with the same B, T; "
            f"got hidden {hidden.shape} and completion_mask {completion_mask.shape}"
        )
    dtype = jnp.promote_types(hidden.dtype, jnp.float32)
    weights = completion_mask[:, 1:].astype(dtype)
    summed = jnp.einsum("bt,bth->bh", weights, hidden[:, :-1].astype(dtype))
    return summed, weights.sum(axis=-1)


def ches_score(
    chosen_hidden, chosen_completion_mask, rejected_hidden, rejected_completion_mask, length_normalized=False
):
    """CHES(x, y+, y-) = <Pos, Neg> - ||Pos||^2 -> [B]; higher means more likelihood displacement.

    ``*_hidden``: [B, T, H] last hidden states (the unembedding's input) of the
    sequences (x, y+) and (x, y-). Pos = sum of the chosen hidden states over
    the positions that predict a response token, Neg likewise for y-.
    Length-normalised (ln-CHES): <Pos, Neg> / (L+ L-) - ||Pos||^2 / L+^2,
    L = number of response tokens. Matches ``compute_ches_scores`` in the
    official code (princeton-nlp/unintentional-unalignment, ches/ches.py),
    which takes last-prompt-token indices and assumes no right padding; the
    mask here handles padding on either side.
    """
    pos, chosen_len = _summed_hidden(chosen_hidden, chosen_completion_mask)
    neg, rejected_len = _summed_hidden(rejected_hidden, rejected_completion_mask)
    if length_normalized:
        pos = pos / chosen_len[:, None]
        neg = neg / rejected_len[:, None]
    return (pos * neg).sum(axis=-1) - (pos * pos).sum(axis=-1)
