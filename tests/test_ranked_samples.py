"""Preference fine-tuning on ranked samples (Tajwar et al., 2024): ranked pairs, the all-pairs DPO loss,
best-of-N SFT, and the trainer's offline and on-policy schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.on_policy_preference import reference_histogram
from rljax.core.config import ConfigError
from rljax.lm import ranked_samples as RS
from rljax.lm.model import LMConfig, init_params
from rljax.lm.sampling import SamplingConfig, generate
from rljax.losses import preference as P


def test_ranked_pairs_skip_ties_and_near_ties():
    rewards = jnp.array([[0.5, 0.1, 0.5, 0.9]])
    mask = np.asarray(P.ranked_pairs(rewards))[0]
    expected = np.zeros((4, 4), bool)
    for i, j in [(0, 1), (2, 1), (3, 0), (3, 1), (3, 2)]:
        expected[i, j] = True
    np.testing.assert_array_equal(mask, expected)  # the tie (0, 2) gives no pair
    thresholded = np.asarray(P.ranked_pairs(rewards, threshold=0.45))[0]
    assert thresholded.sum() == 1 and thresholded[3, 1]  # only 0.9 over 0.1 differs by more than 0.45


def test_ranked_pairs_dpo_loss_is_the_mean_over_ranked_pairs():
    logratios = jnp.array([[0.3, -0.2, 0.1], [0.0, 0.5, -1.0]])
    rewards = jnp.array([[1.0, 0.0, 0.5], [0.2, 0.2, 0.9]])
    beta = 0.7
    pairs = [(0, 0, 1), (0, 0, 2), (0, 2, 1), (1, 2, 0), (1, 2, 1)]  # (prompt, winner, loser); the tie gives none
    expected = np.mean([-np.log(1 / (1 + np.exp(-beta * (logratios[p, w] - logratios[p, l])))) for p, w, l in pairs])
    loss, count = P.ranked_pairs_dpo_loss(logratios, rewards, beta)
    assert int(count) == 5
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    ipo_expected = np.mean([(float(logratios[p, w] - logratios[p, l]) - 1 / (2 * beta)) ** 2 for p, w, l in pairs])
    np.testing.assert_allclose(P.ranked_pairs_dpo_loss(logratios, rewards, beta, "ipo")[0], ipo_expected, rtol=1e-5)
    # a negative gradient: the loss pushes each prompt's worst sample down, its best up
    grad = jax.grad(lambda lr: P.ranked_pairs_dpo_loss(lr, rewards, beta)[0])(logratios)
    assert float(grad[0, 1]) > 0 and float(grad[0, 0]) < 0
    no_pairs, none = P.ranked_pairs_dpo_loss(logratios, jnp.zeros_like(rewards), beta)
    assert float(no_pairs) == 0.0 and int(none) == 0
    with pytest.raises(ValueError, match="unknown loss_type 'hinge'"):
        P.ranked_pairs_dpo_loss(logratios, rewards, beta, "hinge")


def test_best_of_n_nll_raises_only_the_best_sample():
    logps = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
    rewards = jnp.array([[0.1, 0.9, 0.3], [0.4, 0.4, 0.2]])  # a tie: the first maximum
    np.testing.assert_allclose(P.best_of_n_nll(logps, rewards), (2.0 + 0.5) / 2, rtol=1e-6)
    grad = np.asarray(jax.grad(P.best_of_n_nll)(logps, rewards))
    np.testing.assert_allclose(grad, [[0, -0.5, 0], [-0.5, 0, 0]])  # no gradient on any other sample


def test_reference_histogram_is_the_squashed_cauchy():
    h = reference_histogram()
    np.testing.assert_allclose(h.sum(), 1.0, rtol=1e-12)
    # P(tanh X <= 0) = P(X <= 0) for the Cauchy(-0.7, 0.4): the first 50 bins
    np.testing.assert_allclose(h[:50].sum(), 0.5 + np.arctan(0.7 / 0.4) / np.pi, rtol=1e-12)
    assert int(np.argmax(h[3:90])) + 3 == 16


V, L = 8, 3
MODEL = LMConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=L + 2)
PROMPTS = np.stack([np.arange(8), np.arange(8)[::-1]], axis=1)  # 8 two-token prompts


def token_mean_reward(prompt_ids, completions):
    return completions.mean(axis=-1) / (V - 1)


def expected_reward(params):
    rows = jnp.asarray(np.resize(PROMPTS, (512, 2)))
    tokens = generate(params, MODEL, rows, jnp.ones_like(rows), jax.random.key(9), SamplingConfig(max_new_tokens=L)).tokens
    return float(token_mean_reward(None, tokens).mean())


@pytest.mark.parametrize("loss", ["dpo", "best_of_n"])
def test_on_policy_rounds_raise_the_reward(loss):
    ref = init_params(MODEL, jax.random.key(0))
    config = RS.RankedSamplesConfig(model=MODEL, length=L, loss=loss, num_updates=20, samples_per_prompt=8,
                                    prompts_per_update=4, inner_steps=2)
    state, metrics = jax.jit(RS.make_train(config, PROMPTS, token_mean_reward, init_params=ref))(
        jax.random.key(1), RS.RankedSamplesHParams(learning_rate=1e-2, beta=0.5))
    start = expected_reward(ref)  # about 0.5: a random init is near uniform
    assert expected_reward(state.params) > start + 0.15
    assert float(metrics["reward"][-5:].mean()) > float(metrics["reward"][:5].mean())
    if loss == "dpo":  # 4 prompts x up to 28 ranked pairs of 8 samples each; fewer as the samples agree
        assert 0 < float(metrics["pairs"][0]) <= 4 * 28 and float(metrics["pairs"][-1]) < float(metrics["pairs"][0])


def test_offline_is_one_round_from_the_initial_policy():
    ref = init_params(MODEL, jax.random.key(0))
    config = RS.RankedSamplesConfig(model=MODEL, length=L, loss="dpo", num_updates=1, samples_per_prompt=4,
                                    prompts_per_update=8, inner_steps=20)
    trainer = RS.make_train(config, PROMPTS, token_mean_reward, init_params=ref)
    state, metrics = jax.jit(trainer)(jax.random.key(1), RS.RankedSamplesHParams(learning_rate=1e-2, beta=0.5))
    assert metrics["reward"].shape == (1,) and int(state.step) == 1
    assert expected_reward(state.params) > expected_reward(ref) + 0.05


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="samples_per_prompt: ranking needs >= 2 samples per prompt, got 1"):
        RS.RankedSamplesConfig(model=MODEL, length=L, samples_per_prompt=1)
    with pytest.raises(ConfigError, match="loss"):
        RS.RankedSamplesConfig(model=MODEL, length=L, loss="kto")
    with pytest.raises(ConfigError, match="8 prompts is fewer than RankedSamplesConfig.prompts_per_update = 9"):
        RS.make_train(RS.RankedSamplesConfig(model=MODEL, length=L, prompts_per_update=9), PROMPTS, token_mean_reward)
    with pytest.raises(ConfigError, match="RankedSamplesHParams.beta"):
        RS.make_train(RS.RankedSamplesConfig(model=MODEL, length=L), PROMPTS, token_mean_reward).init(
            jax.random.key(0), RS.RankedSamplesHParams(beta=-1.0))


def test_best_worst_pairs_and_group_win_rates():
    rewards = jnp.array([[0.2, 0.9, 0.1, 0.5], [0.3, 0.3, 0.3, 0.3]])
    mask = np.asarray(P.ranked_pairs(rewards, pairs="best_worst"))
    assert mask[0].sum() == 1 and mask[0, 1, 2]  # best (0.9) over worst (0.1)
    assert mask[1].sum() == 0  # all tied: no margin, no pair
    assert int(P.ranked_pairs(rewards, threshold=0.85, pairs="best_worst").sum()) == 0  # margin 0.8 is too small
    with pytest.raises(ValueError, match="unknown pairs 'random'"):
        P.ranked_pairs(rewards, pairs="random")
    # win rates against the other members of the group, the diagonal ignored
    prefs = jnp.array([[[0.5, 0.8, 0.6], [0.2, 0.5, 0.9], [0.4, 0.1, 0.5]]])
    np.testing.assert_allclose(P.group_win_rates(prefs), [[0.7, 0.55, 0.25]], rtol=1e-6)


def test_the_sampler_reference_restarts_the_kl_each_round():
    """With reference="sampler" the round's DPO log-ratios start at 0 (pi_t is its own reference), so the first
    step's loss is log 2 on every round; against the initial policy it is only log 2 on the first round."""
    ref = init_params(MODEL, jax.random.key(0))
    losses = {}
    for reference in ("initial", "sampler"):
        config = RS.RankedSamplesConfig(model=MODEL, length=L, loss="dpo", num_updates=3, samples_per_prompt=4,
                                        prompts_per_update=8, inner_steps=1, reference=reference, pairs="best_worst")
        _, metrics = jax.jit(RS.make_train(config, PROMPTS, token_mean_reward, init_params=ref))(
            jax.random.key(1), RS.RankedSamplesHParams(learning_rate=3e-2, beta=1.0))
        losses[reference] = np.asarray(metrics["loss"])  # one step per round: the loss before that step
        assert np.all(np.asarray(metrics["pairs"]) <= 8)  # at most one pair per prompt
    np.testing.assert_allclose(losses["sampler"], np.log(2.0), rtol=1e-5)
    assert abs(losses["initial"][-1] - np.log(2.0)) > 1e-3


def test_samples_end_at_eos_and_best_of_n_learns_to_stop():
    """With eos_id, a sample's later tokens are padding outside the loss; rewarding short answers shortens them."""
    eos, pad = 1, 0
    ref = init_params(MODEL, jax.random.key(0))
    length_of = lambda completions: (completions >= 2).sum(axis=1)  # noqa: E731  tokens before EOS (pads are 0)
    config = RS.RankedSamplesConfig(model=MODEL, length=L, loss="best_of_n", num_updates=10, samples_per_prompt=8,
                                    prompts_per_update=8, inner_steps=3, eos_id=eos, pad_id=pad)
    trainer = RS.make_train(config, PROMPTS, lambda p, c: -length_of(c).astype(jnp.float32), init_params=ref)
    state, metrics = jax.jit(trainer)(jax.random.key(1), RS.RankedSamplesHParams(learning_rate=1e-2))
    rows = jnp.asarray(np.resize(PROMPTS, (512, 2)))
    sample = lambda params: generate(params, MODEL, rows, jnp.ones_like(rows), jax.random.key(9),  # noqa: E731
                                     SamplingConfig(max_new_tokens=L, eos_id=eos, pad_id=pad)).tokens
    assert float(length_of(sample(state.params)).mean()) < 0.5 * float(length_of(sample(ref)).mean())
    assert float(metrics["reward"][-1]) > float(metrics["reward"][0])
