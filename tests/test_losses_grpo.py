"""GRPO losses against hand computations, and against TRL 1.16's ``GRPOTrainer._compute_loss`` (integration)."""

import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.losses import grpo as G


def test_group_advantages_hand_values():
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0])  # two groups of 4
    centred = np.array([-1.5, -0.5, 0.5, 1.5, -0.25, -0.25, -0.25, 0.75])
    group_std = np.repeat([np.sqrt(5.0 / 3.0), 0.5], 4)  # unbiased (Bessel), as TRL's nanstd
    np.testing.assert_allclose(G.group_advantages(rewards, 4, "group"), centred / (group_std + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(G.group_advantages(rewards, 4, "batch"), centred / (np.std(rewards, ddof=1) + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(G.group_advantages(rewards, 4, "none"), centred, rtol=1e-6)
    # z-scoring within groups ignores a positive affine map of each group's rewards
    mapped = rewards * jnp.repeat(jnp.array([3.0, 0.5]), 4) + jnp.repeat(jnp.array([-7.0, 2.0]), 4)
    np.testing.assert_allclose(G.group_advantages(mapped, 4, "group"), G.group_advantages(rewards, 4, "group"), atol=1e-3)
    # a group whose completions all score the same gets zero advantage, not a division by zero
    np.testing.assert_array_equal(G.group_advantages(jnp.ones(4), 4, "group"), np.zeros(4))
    with pytest.raises(ValueError, match="unknown scale_rewards 'std'"):
        G.group_advantages(rewards, 4, "std")
    with pytest.raises(ValueError, match=r"multiple of group_size >= 2; got shape \(8,\) and group_size 3"):
        G.group_advantages(rewards, 3)


MASK = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
ADV = jnp.array([1.0, -2.0])


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (-1.0 + 2.0) / 2),  # row means -1 and +2, then their mean
    ("dapo", (-2.0 + 6.0) / 5),  # sum over the 5 completion tokens / 5
    ("bnpo", (-2.0 + 6.0) / 5),
    ("dr_grpo", (-2.0 + 6.0) / (2 * 3)),  # / (B * max_completion_length)
])
def test_on_policy_loss_and_gradient_hand_values(loss_type, expected):
    logps = jnp.array([[-1.0, -2.0, -9.0], [-0.5, -1.5, -2.5]])
    loss, metrics = G.grpo_loss(logps, logps, ADV, MASK, loss_type=loss_type)
    assert float(loss) == pytest.approx(expected, rel=1e-6)  # ratio 1: the per-token loss is -A
    assert float(metrics["clip_ratio/region_mean"]) == 0.0
    # on-policy, d loss / d logp = -A times the aggregation's weight of that token
    grad = jax.grad(lambda lp: G.grpo_loss(lp, logps, ADV, MASK, loss_type=loss_type)[0])(logps)
    weights = {"grpo": MASK / MASK.sum(1, keepdims=True) / 2, "dapo": MASK / 5, "bnpo": MASK / 5, "dr_grpo": MASK / 6}
    np.testing.assert_allclose(grad, -ADV[:, None] * weights[loss_type], rtol=1e-6)
    # dr_grpo's constant is the configured max length, not the batch's width
    loss_long, _ = G.grpo_loss(logps, logps, ADV, MASK, loss_type="dr_grpo", max_completion_length=4)
    assert float(loss_long) == pytest.approx(4.0 / 8.0, rel=1e-6)


def test_clipping_stops_the_gradient_only_on_the_side_the_advantage_pushes():
    old = jnp.zeros((2, 3))
    logps = jnp.full((2, 3), np.log(1.5))  # ratio 1.5 everywhere, above 1 + 0.2
    mask = jnp.ones((2, 3))
    adv = jnp.array([1.0, -1.0])
    loss, metrics = G.grpo_loss(logps, old, adv, mask, loss_type="dapo")
    # A > 0: min(1.5 A, 1.2 A) = 1.2 A (clipped, constant); A < 0: min(-1.5, -1.2) = -1.5 (not clipped)
    assert float(loss) == pytest.approx((3 * -1.2 + 3 * 1.5) / 6, rel=1e-6)
    grad = jax.grad(lambda lp: G.grpo_loss(lp, old, adv, mask, loss_type="dapo")[0])(logps)
    np.testing.assert_allclose(grad[0], 0.0)
    np.testing.assert_allclose(grad[1], 1.5 / 6, rtol=1e-6)  # d(-rho A)/d logp = -rho A = 1.5, / 6 tokens
    assert float(metrics["clip_ratio/high_mean"]) == pytest.approx(0.5) and float(metrics["clip_ratio/low_mean"]) == 0
    # DAPO's clip-higher: with eps_high = 0.6 nothing is clipped
    _, metrics = G.grpo_loss(logps, old, adv, mask, epsilon_high=0.6)
    assert float(metrics["clip_ratio/region_mean"]) == 0.0


def test_k3_kl_term():
    assert float(G.k3_kl(jnp.array(-1.0), jnp.array(-0.5))) == pytest.approx(np.exp(0.5) - 0.5 - 1, rel=1e-6)
    assert float(G.k3_kl(jnp.array(-1.0), jnp.array(-1.0))) == 0.0
    logps = jnp.array([[-1.0, -2.0, -9.0], [-0.5, -1.5, -2.5]])
    ref = logps + 0.3
    base, _ = G.grpo_loss(logps, logps, ADV, MASK, loss_type="grpo")
    with_kl, metrics = G.grpo_loss(logps, logps, ADV, MASK, ref_logps=ref, beta=0.04, loss_type="grpo")
    k3 = np.exp(0.3) - 0.3 - 1
    assert float(with_kl - base) == pytest.approx(0.04 * k3, rel=1e-5) and float(metrics["kl"]) == pytest.approx(k3, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss_type 'ppo'"):
        G.grpo_loss(logps, logps, ADV, MASK, loss_type="ppo")


def _trl_loss_and_grad(loss_type, logps, old, ref, adv, mask, beta, eps_low, eps_high, max_len):
    """TRL's own ``GRPOTrainer._compute_loss`` on given per-token log-probs (the model call is stubbed)."""
    import torch
    from trl import GRPOTrainer

    logps_t = torch.tensor(np.asarray(logps), dtype=torch.float64, requires_grad=True)
    B, T = logps_t.shape

    class Accelerator:
        num_processes, sync_gradients = 1, True
        gather = gather_for_metrics = staticmethod(lambda x: x)
        reduce = staticmethod(lambda x, reduction="sum": x)

    stub = types.SimpleNamespace(
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, use_vllm=False, current_gradient_accumulation_steps=1, max_completion_length=max_len,
        _entropy_bonus_enabled=False, accelerator=Accelerator(), model=types.SimpleNamespace(training=True),
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _metrics={"train": collections.defaultdict(list), "eval": collections.defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps_t, torch.zeros_like(logps_t), None),
    )
    mask_t = torch.tensor(np.asarray(mask), dtype=torch.float64)
    inputs = {
        "prompt_ids": torch.zeros((B, 1), dtype=torch.long), "prompt_mask": torch.ones((B, 1), dtype=torch.long),
        "completion_ids": torch.zeros((B, T), dtype=torch.long), "completion_mask": mask_t,
        "advantages": torch.tensor(np.asarray(adv), dtype=torch.float64),
        "old_per_token_logps": torch.tensor(np.asarray(old), dtype=torch.float64),
        "ref_per_token_logps": torch.tensor(np.asarray(ref), dtype=torch.float64),
        "num_items_in_batch": mask_t.sum(),
    }
    loss = GRPOTrainer._compute_loss(stub, types.SimpleNamespace(training=True), inputs)
    loss.backward()
    return loss.item(), logps_t.grad.numpy(), {k: v[-1] for k, v in stub._metrics["train"].items()}


@pytest.mark.integration
@pytest.mark.parametrize("loss_type", G.LOSS_TYPES)
def test_loss_gradient_and_metrics_equal_trls_compute_loss(loss_type):
    rng = np.random.default_rng(0)
    B, T = 6, 5
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, size=(B, 1))).astype(np.float32)  # ragged lengths
    old = -rng.uniform(0.2, 3.0, (B, T)).astype(np.float32)
    logps = (old + rng.normal(0.0, 0.3, (B, T))).astype(np.float32)  # off-policy: ratios both sides of the clip
    ref = (old + rng.normal(0.0, 0.2, (B, T))).astype(np.float32)
    adv = rng.normal(size=B).astype(np.float32)
    beta, eps_low, eps_high, max_len = 0.04, 0.2, 0.28, 7
    trl_loss, trl_grad, trl_metrics = _trl_loss_and_grad(loss_type, logps, old, ref, adv, mask, beta, eps_low, eps_high, max_len)
    kwargs = dict(ref_logps=ref, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, loss_type=loss_type,
                  max_completion_length=max_len)
    (loss, metrics), grad = jax.value_and_grad(lambda lp: G.grpo_loss(lp, old, adv, mask, **kwargs), has_aux=True)(
        jnp.asarray(logps))
    assert float(loss) == pytest.approx(trl_loss, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(grad, trl_grad, rtol=1e-4, atol=1e-7)
    assert 0 < float(metrics["clip_ratio/region_mean"]) < 1  # the example exercises both branches
    for name in ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert float(metrics[name]) == pytest.approx(trl_metrics[name], rel=1e-5, abs=1e-7), name
