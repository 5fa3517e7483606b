"""Preference losses against hand computations (numpy/math, written from the formulas)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.losses import preference as P
from rljax.losses.preference import PreferenceHParams


def logsig(z):
    return -np.log1p(np.exp(-np.asarray(z, np.float64)))


# ---------------------------------------------------------------- log-probs


def test_token_and_sequence_logps_hand_computed():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
    ids = np.array([[2, 0, 1, 1, 0], [1, 1, 2, 0, 0]])
    # row 0: prompt = tokens 0-1, response = 2-4; row 1: prompt = 0-2, response = 3, then padding at 4
    mask = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]])

    expected_tok = np.zeros((2, 4))
    for b in range(2):
        for t in range(4):
            z = logits[b, t].astype(np.float64)
            expected_tok[b, t] = z[ids[b, t + 1]] - np.log(np.exp(z).sum())
    tok = P.token_logps(jnp.asarray(logits), jnp.asarray(ids))
    assert tok.shape == (2, 4) and tok.dtype == jnp.float32
    np.testing.assert_allclose(tok, expected_tok, rtol=1e-5, atol=1e-6)

    # only the log-probs of response tokens count: row 0 tokens 2, 3, 4; row 1 token 3
    expected_seq = [expected_tok[0, 1] + expected_tok[0, 2] + expected_tok[0, 3], expected_tok[1, 2]]
    np.testing.assert_allclose(P.sequence_logps(tok, jnp.asarray(mask)), expected_seq, rtol=1e-5)
    np.testing.assert_allclose(P.completion_lengths(jnp.asarray(mask)), [3.0, 1.0])


def test_token_logps_bf16_logits_are_computed_in_float32():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, 4)), jnp.bfloat16)
    out = P.token_logps(logits, jnp.array([[0, 1, 3]]))
    assert out.dtype == jnp.float32
    z = np.asarray(logits.astype(jnp.float32), np.float64)[0]
    expected = [z[0, 1] - np.log(np.exp(z[0]).sum()), z[1, 3] - np.log(np.exp(z[1]).sum())]
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5, 3\).*\(2, 4\)"):
        P.token_logps(jnp.zeros((2, 5, 3)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="per_token_logps"):
        P.sequence_logps(jnp.zeros((2, 4)), jnp.zeros((2, 4)))


# ---------------------------------------------------------------- individual losses


def test_each_loss_type_hand_computed():
    delta = np.array([2.0, -1.0])
    beta, eps = 0.5, 0.1
    z = beta * delta
    d = jnp.asarray(delta)
    np.testing.assert_allclose(P.sigmoid(d, beta, eps), -(1 - eps) * logsig(z) - eps * logsig(-z), rtol=1e-6)
    np.testing.assert_allclose(
        P.robust(d, beta, eps), (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps), rtol=1e-6
    )
    np.testing.assert_allclose(P.hinge(d, beta), [0.0, 1.5], atol=1e-7)  # relu(1 - 1), relu(1 + 0.5)
    np.testing.assert_allclose(P.ipo(d, beta), [(2.0 - 1.0) ** 2, (-1.0 - 1.0) ** 2], rtol=1e-6)  # 1/(2 beta) = 1
    # first example: log 2 at the origin
    np.testing.assert_allclose(P.sigmoid(jnp.zeros(1), 0.3), [math.log(2.0)], rtol=1e-6)


def test_label_smoothing_zero_is_plain_dpo_and_robust_zero_is_sigmoid():
    d = jnp.array([-3.0, -0.2, 0.0, 0.7, 4.0])
    plain = -logsig(0.1 * np.asarray(d))
    np.testing.assert_allclose(P.sigmoid(d, 0.1, 0.0), plain, rtol=1e-6)
    np.testing.assert_allclose(P.robust(d, 0.1, 0.0), P.sigmoid(d, 0.1, 0.0), rtol=1e-6)


def test_sft_normalizations():
    logps = jnp.array([-6.0, -2.0])
    lengths = jnp.array([3.0, 1.0])
    np.testing.assert_allclose(P.sft(logps), [6.0, 2.0])
    np.testing.assert_allclose(P.sft(logps, lengths, "seq_mean"), [2.0, 2.0])
    np.testing.assert_allclose(P.sft(logps, lengths, "mean"), [8.0 / 4.0] * 2)  # TRL: one token mean over the batch
    np.testing.assert_allclose(P.sft(jnp.array([-6.0, -4.0]), lengths, "mean"), [2.5, 2.5])
    with pytest.raises(ValueError, match="chosen_lengths"):
        P.sft(logps, None, "mean")
    with pytest.raises(ValueError, match="seq_mean"):
        P.sft(logps, lengths, "token")


# ---------------------------------------------------------------- the combinator

PC, PR = np.array([-5.0, -7.0, -4.0]), np.array([-6.0, -6.5, -9.0])
RC, RR = np.array([-5.5, -6.0, -4.0]), np.array([-6.0, -7.0, -8.0])
LENS = np.array([4.0, 2.0, 3.0])


def _args():
    return tuple(jnp.asarray(x) for x in (PC, PR, RC, RR, LENS))


def test_dpo_loss_value_and_metrics():
    hp = PreferenceHParams(beta=0.2)
    loss, aux = P.dpo_loss(*_args(), hp)
    cr, rr = 0.2 * (PC - RC), 0.2 * (PR - RR)  # [0.1, -0.2, 0.0], [0.0, 0.1, -0.2]
    np.testing.assert_allclose(loss, np.mean(-logsig(cr - rr)), rtol=1e-6)
    np.testing.assert_allclose(aux["loss/sigmoid"], loss, rtol=1e-6)
    np.testing.assert_allclose(aux["rewards/chosen"], cr.mean(), atol=1e-7)
    np.testing.assert_allclose(aux["rewards/rejected"], rr.mean(), atol=1e-7)
    np.testing.assert_allclose(aux["rewards/margins"], (cr - rr).mean(), atol=1e-7)
    np.testing.assert_allclose(aux["rewards/accuracies"], 2.0 / 3.0)  # examples 0 and 2 rank y+ above y-
    np.testing.assert_allclose(aux["logps/chosen"], PC.mean())
    np.testing.assert_allclose(aux["logps/rejected"], PR.mean())
    expected_keys = {"loss", "loss/sigmoid", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                     "rewards/margins", "logps/chosen", "logps/rejected"}
    assert set(aux) == expected_keys
    assert all(jnp.ndim(v) == 0 for v in aux.values())


def test_weighted_list_is_the_weighted_sum_and_rpo_helper():
    hp = PreferenceHParams(beta=0.2, label_smoothing=0.05)
    eta = 0.3
    sig, aux_s = P.dpo_loss(*_args(), hp, ("sigmoid",))
    sft, _ = P.dpo_loss(*_args(), hp, ("sft",))
    both, aux = P.dpo_loss(*_args(), hp, ("sigmoid", "sft"), (1.0, eta))
    np.testing.assert_allclose(both, sig + eta * sft, rtol=1e-6)
    np.testing.assert_allclose(sft, -PC.mean(), rtol=1e-6)  # default: summed NLL of y+
    np.testing.assert_allclose(aux["loss/sft"], -PC.mean(), rtol=1e-6)  # logged unweighted
    np.testing.assert_allclose(aux["loss/sigmoid"], aux_s["loss/sigmoid"], rtol=1e-6)

    sft_mean, _ = P.dpo_loss(*_args(), hp, ("sft",), sft_normalization="mean")
    np.testing.assert_allclose(sft_mean, -PC.sum() / LENS.sum(), rtol=1e-6)

    types, weights = P.rpo_loss_types(eta, hp.beta)
    assert types == ("sigmoid", "sft")
    rpo, _ = P.dpo_loss(*_args(), hp, types, weights)
    np.testing.assert_allclose(rpo, sig + eta * 0.2 * sft, rtol=1e-6)  # paper: eta * beta * NLL


def test_all_types_sum_with_default_weights():
    hp = PreferenceHParams(beta=0.5, label_smoothing=0.1)
    d = (PC - RC) - (PR - RR)
    z = 0.5 * d
    expected = (
        (-(0.9) * logsig(z) - 0.1 * logsig(-z))
        + (-(0.9) * logsig(z) + 0.1 * logsig(-z)) / 0.8
        + np.maximum(0.0, 1 - z)
        + (d - 1.0) ** 2
        - PC
    ).mean()
    loss, aux = P.dpo_loss(*_args(), hp, P.LOSS_TYPES)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert {f"loss/{t}" for t in P.LOSS_TYPES} <= set(aux)


def test_bad_loss_types_and_weights_raise():
    hp = PreferenceHParams()
    with pytest.raises(ValueError, match=r"unknown loss type.*'nope'.*sigmoid.*robust.*hinge.*ipo.*sft"):
        P.dpo_loss(*_args(), hp, ("sigmoid", "nope"))
    with pytest.raises(ValueError, match=r"loss_weights has 1 entries but loss_types has 2"):
        P.dpo_loss(*_args(), hp, ("sigmoid", "sft"), (1.0,))
    with pytest.raises(ValueError, match="chosen_lengths"):
        P.dpo_loss(*_args()[:4], None, hp, ("sft",), sft_normalization="seq_mean")


def test_reference_logps_get_zero_gradient():
    hp = PreferenceHParams(beta=0.3, label_smoothing=0.1)
    args = _args()

    def f(pc, pr, rc, rr):
        return P.dpo_loss(pc, pr, rc, rr, args[4], hp, P.LOSS_TYPES)[0]

    grads = jax.grad(f, argnums=(0, 1, 2, 3))(*args[:4])
    assert np.all(np.asarray(grads[2]) == 0.0) and np.all(np.asarray(grads[3]) == 0.0)
    assert np.any(np.asarray(grads[0]) != 0.0) and np.any(np.asarray(grads[1]) != 0.0)


def test_dpo_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        hp = PreferenceHParams(beta=0.7, label_smoothing=0.1)
        args = tuple(jnp.asarray(x, jnp.float64) for x in (PC, PR, RC, RR, LENS))

        def f(pc, pr):
            return P.dpo_loss(pc, pr, args[2], args[3], args[4], hp, ("sigmoid", "ipo", "sft"), (1.0, 0.5, 0.1))[0]

        grad_c, grad_r = jax.grad(f, argnums=(0, 1))(args[0], args[1])
        h = 1e-6
        for i in range(3):
            e = np.zeros(3)
            e[i] = h
            fd_c = (f(args[0] + e, args[1]) - f(args[0] - e, args[1])) / (2 * h)
            fd_r = (f(args[0], args[1] + e) - f(args[0], args[1] - e)) / (2 * h)
            np.testing.assert_allclose(grad_c[i], fd_c, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(grad_r[i], fd_r, rtol=1e-6, atol=1e-9)
        # analytic, sigmoid term only: dL/dpi_c = -beta (1 - sigma(beta delta)) / B
        g = jax.grad(lambda pc: P.dpo_loss(pc, args[1], args[2], args[3], None, hp)[0])(args[0])
        d = (PC - RC) - (PR - RR)
        s = 1 / (1 + np.exp(-0.7 * d))
        np.testing.assert_allclose(g, (-(0.9) * 0.7 * (1 - s) + 0.1 * 0.7 * s) / 3, rtol=1e-9)


def test_gradient_through_logits_matches_finite_differences():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        ids_c = jnp.array([[1, 3, 0, 2, 2], [0, 1, 1, 3, 0]])
        ids_r = jnp.array([[1, 3, 2, 0, 1], [0, 1, 2, 0, 0]])
        mask_c = jnp.array([[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]])
        mask_r = jnp.array([[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])
        logits_c = jnp.asarray(rng.normal(size=(2, 5, 4)))
        logits_r = jnp.asarray(rng.normal(size=(2, 5, 4)))
        ref_c = jnp.array([-4.0, -3.0])
        ref_r = jnp.array([-5.0, -1.5])
        hp = PreferenceHParams(beta=0.5)

        def f(lc):
            pc = P.sequence_logps(P.token_logps(lc, ids_c), mask_c)
            pr = P.sequence_logps(P.token_logps(logits_r, ids_r), mask_r)
            return P.dpo_loss(pc, pr, ref_c, ref_r, P.completion_lengths(mask_c), hp, ("sigmoid", "sft"), (1.0, 0.2))[0]

        grad = np.asarray(jax.grad(f)(logits_c))
        h = 1e-6
        fd = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            e = np.zeros(grad.shape)
            e[idx] = h
            fd[idx] = (f(logits_c + e) - f(logits_c - e)) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
        # prompt-predicting positions, the final position and padding get no gradient
        assert np.all(grad[0, [0, 4]] == 0.0) and np.all(grad[1, [0, 3, 4]] == 0.0)


def test_dpo_loss_vmaps_over_hparams_and_jits():
    hps = PreferenceHParams(beta=jnp.array([0.1, 0.5]), label_smoothing=jnp.array([0.0, 0.2]))
    losses = jax.jit(jax.vmap(lambda hp: P.dpo_loss(*_args(), hp, ("robust",))[0]))(hps)
    for i, (b, e) in enumerate([(0.1, 0.0), (0.5, 0.2)]):
        z = b * ((PC - RC) - (PR - RR))
        np.testing.assert_allclose(losses[i], np.mean((-(1 - e) * logsig(z) + e * logsig(-z)) / (1 - 2 * e)), rtol=1e-6)


# ---------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_loss_and_accuracy():
    rc, rr = np.array([1.0, 0.0, 2.0, -1.0]), np.array([0.0, 0.5, 1.0, 0.0])
    loss, aux = P.bradley_terry_loss(jnp.asarray(rc), jnp.asarray(rr))
    np.testing.assert_allclose(loss, np.mean(-logsig(rc - rr)), rtol=1e-6)
    np.testing.assert_allclose(aux["accuracy"], 0.5)
    np.testing.assert_allclose(aux["rewards/chosen"], 0.5)
    np.testing.assert_allclose(aux["rewards/rejected"], 0.375)
    np.testing.assert_allclose(aux["margin"], 0.125)

    margin = np.array([0.5, 0.0, 1.0, 0.0])
    loss_m, _ = P.bradley_terry_loss(jnp.asarray(rc), jnp.asarray(rr), jnp.asarray(margin), 0.01)
    expected = np.mean(-logsig(rc - rr - margin)) + 0.01 * np.mean((rc + rr) ** 2)
    np.testing.assert_allclose(loss_m, expected, rtol=1e-6)


# ---------------------------------------------------------------- CHES


def test_ensemble_reward_objectives_hand_values():
    rewards = np.array([[1.0, 2.0], [3.0, -2.0], [2.0, 0.0]])  # [K = 3 members, 2 responses]
    np.testing.assert_allclose(P.ensemble_reward(rewards, "mean"), [2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(P.ensemble_reward(rewards, "wco"), [1.0, -2.0], rtol=1e-6)
    # population variances over the members: 2/3 and 8/3 (np.var, as the paper's best-of-n code)
    np.testing.assert_allclose(P.ensemble_reward(rewards, "uwo", 0.5), [2.0 - 1.0 / 3.0, -4.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(P.ensemble_reward(rewards, "uwo", 0.1), [2.0 - 0.2 / 3.0, -0.8 / 3.0], rtol=1e-6)
    # one member: every objective is that member's reward
    for objective in P.ENSEMBLE_OBJECTIVES:
        np.testing.assert_allclose(P.ensemble_reward(rewards[:1], objective), rewards[0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown objective 'max'"):
        P.ensemble_reward(rewards, "max")
    with pytest.raises(ValueError, match=r"\[K, \.\.\.\] with K >= 1 members, got shape \(\)"):
        P.ensemble_reward(1.0, "mean")


def test_ches_counts_last_prompt_token_and_skips_final_response_token():
    # chosen (x, y+): prompt = positions 0-1, response = 2-4 (4 is the final token, e.g. EOS)
    h_c = np.array([[[100.0, 100.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-50.0, 70.0]]])
    m_c = np.array([[0, 0, 1, 1, 1]])
    # rejected (x, y-): prompt = 0-1, response = 2-3, right padding at 4
    h_r = np.array([[[100.0, 100.0], [1.0, 0.0], [3.0, -1.0], [9.0, 9.0], [9.0, 9.0]]])
    m_r = np.array([[0, 0, 1, 1, 0]])
    pos = np.array([1.0, 0.0]) + np.array([0.0, 2.0]) + np.array([1.0, 1.0])  # positions 1, 2, 3
    neg = np.array([1.0, 0.0]) + np.array([3.0, -1.0])  # positions 1, 2
    expected = pos @ neg - pos @ pos  # (2, 3) . (4, -1) - 13 = 5 - 13
    score = P.ches_score(jnp.asarray(h_c), jnp.asarray(m_c), jnp.asarray(h_r), jnp.asarray(m_r))
    np.testing.assert_allclose(score, [expected], rtol=1e-6)
    np.testing.assert_allclose(score, [-8.0], rtol=1e-6)

    ln = P.ches_score(jnp.asarray(h_c), jnp.asarray(m_c), jnp.asarray(h_r), jnp.asarray(m_r), length_normalized=True)
    np.testing.assert_allclose(ln, [pos @ neg / (3 * 2) - pos @ pos / 3**2], rtol=1e-6)


def test_ches_matches_the_official_last_prompt_index_form():
    # The official code zeroes positions before the last prompt token and drops the final
    # position (no right padding); batch of 2 with different prompt lengths.
    rng = np.random.default_rng(3)
    h_c, h_r = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    last_c, last_r = np.array([1, 2]), np.array([3, 0])

    def mask_from(last):
        return (np.arange(6)[None] > last[:, None]).astype(np.int32)

    def official(hc, hr, lc, lr, normalize):
        out = []
        for b in range(2):
            sc = hc[b, lc[b]:5].sum(0)
            sr = hr[b, lr[b]:5].sum(0)
            if normalize:
                sc, sr = sc / (5 - lc[b]), sr / (5 - lr[b])
            out.append(sc @ sr - sc @ sc)
        return np.array(out)

    for normalize in (False, True):
        got = P.ches_score(jnp.asarray(h_c), jnp.asarray(mask_from(last_c)), jnp.asarray(h_r),
                           jnp.asarray(mask_from(last_r)), length_normalized=normalize)
        np.testing.assert_allclose(got, official(h_c, h_r, last_c, last_r, normalize), rtol=1e-5)
