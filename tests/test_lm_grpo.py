"""The online GRPO trainer: its rescoring matches generation, it learns an exact reward, it refuses bad settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.text import SequenceSpace, exact_expectation, prompted_rows, random_linear_reward
from rljax.core.config import ConfigError
from rljax.lm import grpo
from rljax.lm import train as lm_train
from rljax.lm.model import LMConfig, init_params
from rljax.lm.sampling import SamplingConfig, generate
from rljax.losses import grpo as grpo_losses


def test_rescoring_left_padded_prompts_gives_the_generation_logprobs():
    """The loss's log-probs must be those of the sampled tokens: positions follow the left padding."""
    config = LMConfig(19, 32, 2, 4, num_kv_heads=2, max_position_embeddings=32)
    params = init_params(config, jax.random.key(0))
    prompt_ids = jnp.array([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 9]])
    prompt_mask = (jnp.arange(4)[None] >= jnp.array([[2], [0], [3]])).astype(jnp.int32)
    gen = generate(params, config, prompt_ids, prompt_mask, jax.random.key(1), SamplingConfig(6, eos_id=2, pad_id=0))
    ids = jnp.concatenate([prompt_ids, gen.tokens], axis=1)
    attention = jnp.concatenate([prompt_mask, gen.mask], axis=1)
    logps = grpo.completion_token_logps(params, config, ids, attention, prompt_length=4)
    np.testing.assert_allclose(logps * gen.mask, gen.logprobs, atol=2e-5)
    # at another temperature, the log-probs of the tempered policy that drew the tokens
    tempered = generate(params, config, prompt_ids, prompt_mask, jax.random.key(1),
                        SamplingConfig(6, temperature=0.7, eos_id=2, pad_id=0))
    ids = jnp.concatenate([prompt_ids, tempered.tokens], axis=1)
    attention = jnp.concatenate([prompt_mask, tempered.mask], axis=1)
    logps = grpo.completion_token_logps(params, config, ids, attention, 4, temperature=0.7)
    np.testing.assert_allclose(logps * tempered.mask, tempered.sampling_logprobs, atol=2e-5)


V, L = 4, 3
SPACE = SequenceSpace(V, L)
GOLD = jnp.asarray(random_linear_reward(0, V, L)(SPACE.sequences))
MODEL = LMConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=L + 1)
ROWS = prompted_rows(SPACE, 0)
POWERS = jnp.asarray(V ** np.arange(L - 1, -1, -1))


def gold_reward(prompt_ids, completion_ids, completion_mask):
    return GOLD[(completion_ids * POWERS).sum(-1)]


def expected_gold(params):
    """E_{y ~ pi}[gold(y)], exact over the 64 responses (the model's vocabulary is the 4 response tokens)."""
    logp, _ = lm_train.sequence_logps(params, MODEL, *ROWS)
    return exact_expectation(logp, GOLD)


def make(advantage_fn=None, **fields):
    config = grpo.GRPOConfig(**({"model": MODEL, "max_completion_length": L, "num_updates": 40, "prompts_per_update": 2}
                                | fields))
    return grpo.make_train(config, np.zeros((4, 1), np.int32), np.ones((4, 1), np.int32), gold_reward,
                           advantage_fn=advantage_fn)


def test_grpo_raises_the_exact_expected_reward():
    hp = grpo.GRPOHParams(learning_rate=1e-2)
    start = float(expected_gold(make().init(jax.random.key(0), hp).params))
    state, metrics = jax.jit(make())(jax.random.key(0), hp)
    spread = float(GOLD.std())  # std of the gold reward over the 64 responses: 1.05
    assert float(expected_gold(state.params)) > start + 0.5 * spread
    assert metrics["reward"].shape == (40,) and float(metrics["reward"][-5:].mean()) > float(metrics["reward"][:5].mean())
    np.testing.assert_array_equal(metrics["completions/mean_length"], float(L))  # no eos: every completion is L long


def test_advantage_fn_replaces_the_group_advantages():
    hp = grpo.GRPOHParams(learning_rate=1e-2)
    default, _ = jax.jit(make())(jax.random.key(0), hp)
    # the same advantages through the hook: the same run (its key does not disturb the sampling stream)
    same, _ = jax.jit(make(lambda key, r: grpo_losses.group_advantages(r, 8)))(jax.random.key(0), hp)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), same.params, default.params)
    # negated advantages descend the reward the default ascends
    start = float(expected_gold(make().init(jax.random.key(0), hp).params))
    negated, metrics = jax.jit(make(lambda key, r: -grpo_losses.group_advantages(r, 8)))(jax.random.key(0), hp)
    assert float(expected_gold(negated.params)) < start - 0.5 * float(GOLD.std())
    assert float(metrics["reward"][-5:].mean()) < float(metrics["reward"][:5].mean())  # the metric stays reward_fn's
    with pytest.raises(ConfigError, match=r"advantage_fn: expected advantages of the rewards' shape \(16,\), got \(8,\)"):
        jax.jit(make(lambda key, r: r[:8]))(jax.random.key(0), hp)


def test_adam_divides_out_a_rescaled_advantage():
    """Without KL or clipping, advantages times k move Adam's params the same way up to its epsilon (SGD would
    take k as a learning rate; the hook is live: test above): why the backward noisy-verifier correction, a
    rescaled leave-one-out control, changes little (experiments/RESULTS.md, "GRPO under a noisy verifier")."""
    hp = grpo.GRPOHParams(learning_rate=1e-2)
    start = jax.tree.leaves(make().init(jax.random.key(0), hp).params)
    moves = []
    for k in (1.0, 1 / 0.7):
        trainer = make(lambda key, r, k=k: k * grpo_losses.group_advantages(r, 8, "none"), max_grad_norm=0.0,
                       num_updates=10)
        params = jax.tree.leaves(jax.jit(trainer)(jax.random.key(0), hp)[0].params)
        moves.append(np.concatenate([np.ravel(p - p0) for p, p0 in zip(params, start)]))
    assert np.linalg.norm(moves[0]) > 1.0  # the params did move (measured 6.8)
    assert np.linalg.norm(moves[1] - moves[0]) / np.linalg.norm(moves[0]) < 5e-3  # measured 5e-4; 0.48 under SGD


def test_several_iterations_with_a_kl_reference():
    hp = grpo.GRPOHParams(learning_rate=1e-2, beta=0.1, epsilon_high=0.28)
    state, metrics = jax.jit(make(num_iterations=2, kl_reference=True, loss_type="grpo"))(jax.random.key(1), hp)
    # per update, the mean over its two iterations: the policy moves away from its frozen reference
    assert float(metrics["kl"][0]) < float(metrics["kl"][-1]) and float(metrics["kl"][-1]) > 1e-3
    # the second iteration over a batch is off-policy, so its ratios can reach the clipping range
    assert np.all(np.isfinite(np.asarray(metrics["loss"]))) and float(metrics["clip_ratio/region_mean"].max()) > 0
    assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape, state.params, state.ref_params))


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="beta = 0.1 needs GRPOConfig.kl_reference = True"):
        make().init(jax.random.key(0), grpo.GRPOHParams(beta=0.1))
    with pytest.raises(ConfigError, match="GRPOConfig.num_generations: groups need >= 2 completions, got 1"):
        grpo.GRPOConfig(model=MODEL, max_completion_length=L, num_generations=1)
    with pytest.raises(ConfigError, match="loss_type"):
        grpo.GRPOConfig(model=MODEL, max_completion_length=L, loss_type="ppo")
    with pytest.raises(ConfigError, match="4 prompts is fewer than GRPOConfig.prompts_per_update = 8"):
        make(prompts_per_update=8)
    with pytest.raises(ConfigError, match=r"largest is 7"):
        grpo.make_train(grpo.GRPOConfig(model=MODEL, max_completion_length=L), np.full((8, 1), 7), np.ones((8, 1)),
                        gold_reward)
    with pytest.raises(ConfigError, match="GRPOHParams.epsilon_low: expected a number in"):
        make().init(jax.random.key(0), grpo.GRPOHParams(epsilon_low=1.5))
