"""The noisy-verifier corrections (Cai et al., 2025): hand values, the paper's identities, the z-score no-op,
the verifier channel's rates and the modular-sum task."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.text.verifier import modular_sum_task, verifier_channel
from rljax.losses import grpo as grpo_losses
from rljax.losses import noisy_verifier as nv

RHO0, RHO1 = 0.1, 0.2


def test_backward_reward_and_forward_weight_hand_values():
    r = jnp.array([0.0, 1.0])
    # (r - 0.1) / 0.7
    np.testing.assert_allclose(nv.backward_corrected_reward(r, RHO0, RHO1), [-0.1 / 0.7, 0.9 / 0.7], rtol=1e-6)
    # rho1 - 1 for a rejection, rho1 for an acceptance
    np.testing.assert_allclose(nv.forward_weight(r, RHO1), [-0.8, 0.2], rtol=1e-6)
    # the clamp on 1 - rho0 - rho1
    np.testing.assert_allclose(nv.backward_corrected_reward(r, 0.5, 0.5), (r - 0.5) / nv.MIN_DENOMINATOR, rtol=1e-6)


@pytest.mark.parametrize("clean", [0.0, 1.0])
def test_channel_moments_are_the_papers(clean):
    """Exact expectations over the two verdicts, weighted by the channel's probabilities: E[r^ | R*] = R*
    (Theorem 3.3); E[w | R*=1] = 0 and E[w | R*=0] = -(1 - rho0 - rho1) (Proposition 3.4)."""
    p_accept = 1 - RHO1 if clean else RHO0
    verdicts, probs = jnp.array([0.0, 1.0]), jnp.array([1 - p_accept, p_accept])
    assert float(probs @ nv.backward_corrected_reward(verdicts, RHO0, RHO1)) == pytest.approx(clean, abs=1e-6)
    expected_w = 0.0 if clean else -(1 - RHO0 - RHO1)
    assert float(probs @ nv.forward_weight(verdicts, RHO1)) == pytest.approx(expected_w, abs=1e-6)


def test_leave_one_out_baseline_by_hand():
    values = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(nv.leave_one_out_baseline(values, 3), [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])


def test_channel_advantages_by_hand():
    r = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # two groups of 3
    # the noisy control with a leave-one-out baseline
    np.testing.assert_allclose(nv.channel_advantages(r, 3, "none"), [1.0, -0.5, -0.5, -1.0, 0.5, 0.5], rtol=1e-6)
    # PGBC: r^ minus the others' mean of r^, over s = 2
    rhat = (r - RHO0) / 0.7
    loo = (rhat.reshape(2, 3).sum(1, keepdims=True) - rhat.reshape(2, 3)).reshape(-1) / 2
    np.testing.assert_allclose(nv.channel_advantages(r, 3, "backward", rho0=RHO0, rho1=RHO1, scale=2.0),
                               (rhat - loo) / 2, rtol=1e-6)
    # PGFC: the weight itself, no current-group baseline
    np.testing.assert_allclose(nv.channel_advantages(r, 3, "forward", rho1=RHO1), [0.2, -0.8, -0.8, -0.8, 0.2, 0.2],
                               rtol=1e-6)
    # the direct noisy control is the verdict itself
    np.testing.assert_allclose(nv.channel_advantages(r, 3, "none", baseline="none"), r)


def test_corrections_vanish_under_group_z_score():
    """The paper's Appendix B.4: feeding either correction into GRPO's group z-score gives the uncorrected
    advantages (up to the std's epsilon), so they must be used with a fixed scale."""
    r = jax.random.bernoulli(jax.random.key(0), 0.4, (64,)).astype(jnp.float32)
    grouped = r.reshape(8, 8)
    centred = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
    std = jnp.repeat(grouped.std(1, ddof=1), 8)
    noisy = grpo_losses.group_advantages(r, 8)
    np.testing.assert_allclose(noisy, centred / (std + grpo_losses.STD_EPS), rtol=1e-6)
    # Z(a r + b) = (r - mean) / (std + eps / a): the backward correction's a = 1 / (1 - rho0 - rho1); the
    # forward weight is r shifted (a = 1)
    backward = grpo_losses.group_advantages(nv.backward_corrected_reward(r, RHO0, RHO1), 8)
    forward = grpo_losses.group_advantages(nv.forward_weight(r, RHO1), 8)
    np.testing.assert_allclose(backward, centred / (std + grpo_losses.STD_EPS * (1 - RHO0 - RHO1)), rtol=1e-5)
    np.testing.assert_allclose(forward, noisy, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(noisy).max()) > 0.5  # the groups are not all degenerate


def test_backward_with_leave_one_out_only_rescales_the_noisy_control():
    """PGBC's coefficients are the leave-one-out noisy control's divided by 1 - rho0 - rho1: the audit finds
    differences, but a cosine of 1 (a learning-rate change; under Adam nearly none)."""
    r = jax.random.bernoulli(jax.random.key(1), 0.4, (64,)).astype(jnp.float32)
    noisy = nv.channel_advantages(r, 8, "none")
    backward = nv.channel_advantages(r, 8, "backward", rho0=RHO0, rho1=RHO1)
    np.testing.assert_allclose(backward, noisy / (1 - RHO0 - RHO1), rtol=1e-5, atol=1e-6)
    audit = nv.advantage_audit(backward, noisy)
    assert float(audit["d_max"]) > 0.1 and float(audit["cosine"]) == pytest.approx(1.0, abs=1e-6)
    # PGFC against its direct control is a genuinely different direction
    forward_audit = nv.advantage_audit(nv.channel_advantages(r, 8, "forward", rho1=RHO1),
                                       nv.channel_advantages(r, 8, "none", baseline="none"))
    assert float(forward_audit["d_mean"]) == pytest.approx(0.8, abs=1e-6)  # w - r = rho1 - 1 everywhere
    assert float(forward_audit["cosine"]) < 0.9


def test_advantage_audit_by_hand():
    audit = nv.advantage_audit(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
    assert float(audit["d_mean"]) == 1.0 and float(audit["d_max"]) == 1.0 and float(audit["cosine"]) == 0.0
    assert np.isnan(float(nv.advantage_audit(jnp.zeros(2), jnp.ones(2))["cosine"]))


def test_bad_input_names_the_field():
    r = jnp.zeros(8)
    with pytest.raises(ValueError, match="correction 'sideways'"):
        nv.channel_advantages(r, 4, "sideways")
    with pytest.raises(ValueError, match="baseline 'median'"):
        nv.channel_advantages(r, 4, "none", baseline="median")
    with pytest.raises(ValueError, match="multiple of group_size"):
        nv.channel_advantages(r, 3, "none")
    with pytest.raises(ValueError, match="rho1 must be a rate in"):
        nv.channel_advantages(r, 4, "forward", rho1=1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        nv.channel_advantages(r, 4, "none", scale=0.0)
    with pytest.raises(ValueError, match="rho0 must be a probability"):
        verifier_channel(jax.random.key(0), r, -0.1, 0.2)


def test_verifier_channel_flips_at_its_rates():
    n = 200_000
    clean = (jnp.arange(n) % 2).astype(jnp.float32)
    noisy = verifier_channel(jax.random.key(3), clean, RHO0, RHO1)
    assert set(np.unique(np.asarray(noisy)).tolist()) <= {0.0, 1.0}
    false_positive = float(noisy[clean == 0].mean())
    false_negative = float(1 - noisy[clean == 1].mean())
    # binomial standard error sqrt(p (1 - p) / 1e5) <= 1.3e-3: 5 of them
    assert false_positive == pytest.approx(RHO0, abs=6.5e-3)
    assert false_negative == pytest.approx(RHO1, abs=6.5e-3)
    # jittable with traced rates
    traced = jax.jit(verifier_channel)(jax.random.key(3), clean, RHO0, RHO1)
    np.testing.assert_array_equal(traced, noisy)


def test_modular_sum_task():
    task = modular_sum_task(2, 7)
    assert task.prompts.shape == (49, 4) and task.vocab_size == 11
    for (a, b), row, answer in zip(itertools.product(range(7), repeat=2), task.prompts, task.answers):
        assert row.tolist() == [task.bos_id, a, b, task.equals_id] and answer == (a + b) % 7
    completions = jnp.stack([jnp.asarray(task.answers), jnp.full(49, task.eos_id)], axis=1)
    np.testing.assert_array_equal(task.verify(task.prompts, completions), np.ones(49))
    np.testing.assert_array_equal(task.verify(task.prompts, (completions + 1) % 7), np.zeros(49))
    with pytest.raises(ValueError, match="modulus >= 2"):
        modular_sum_task(2, 1)
