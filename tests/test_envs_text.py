"""Synthetic text tasks: enumerable sequence spaces, fact corpora, labelled preference pairs (envs.text)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.text as text
from envs.text import facts


# ---------------------------------------------------------------- enumeration


def test_sequence_space_size_and_order():
    space = text.SequenceSpace(3, 2)
    assert len(space) == space.size == 9
    assert space.sequences.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2]]
    assert space.sequences.dtype == np.int32
    big = text.SequenceSpace(4, 5)
    assert big.sequences.shape == (1024, 5)
    np.testing.assert_array_equal(big.index(big.sequences), np.arange(1024))
    np.testing.assert_array_equal(big.sequences[int(big.index(jnp.array([1, 2, 3, 0, 1])))], [1, 2, 3, 0, 1])
    assert text.SequenceSpace(2, 20).size == 2**20
    with pytest.raises(ValueError, match="= 2097152 sequences, more than"):
        text.SequenceSpace(2, 21)


def test_exact_kl_entropy_expectation_hand_values():
    log = lambda p: jnp.log(jnp.asarray(p, jnp.float32))
    uniform = log([0.25] * 4)
    assert float(text.exact_kl(log([0.5, 0.5, 0.0, 0.0]), uniform)) == pytest.approx(math.log(2), rel=1e-6)
    hand = 0.7 * math.log(0.7 / 0.25) + 3 * 0.1 * math.log(0.1 / 0.25)
    assert float(text.exact_kl(log([0.7, 0.1, 0.1, 0.1]), uniform)) == pytest.approx(hand, rel=1e-5)
    assert float(text.exact_kl(uniform, log([0.5, 0.5, 0.0, 0.0]))) == math.inf
    assert float(text.exact_entropy(uniform)) == pytest.approx(math.log(4), rel=1e-6)
    assert float(text.exact_entropy(log([1.0, 0.0, 0.0, 0.0]))) == 0.0
    assert float(text.exact_expectation(log([0.5, 0.5, 0.0, 0.0]), jnp.array([1.0, 3.0, 100.0, 100.0]))) == pytest.approx(2.0)
    # Gradients stay finite where p has zeros (no nan from the masked branch).
    grad = jax.grad(lambda lp: text.exact_kl(lp, uniform))(log([0.5, 0.5, 0.0, 0.0]))
    assert np.all(np.isfinite(grad))


def test_gold_rewards():
    seqs = np.array([[0, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(text.token_count_reward(seqs, 1), [2.0, 0.0])
    weights = np.arange(9, dtype=np.float32).reshape(3, 3)  # weights[t, v] = 3t + v
    np.testing.assert_array_equal(text.position_weighted_reward(seqs, weights), [0 + 4 + 7, 2 + 5 + 8])
    reward = text.random_linear_reward(0, 4, 5)
    again = text.random_linear_reward(jax.random.key(0), 4, 5)
    space = text.SequenceSpace(4, 5)
    np.testing.assert_array_equal(reward(space.sequences), again(space.sequences))
    assert reward.keywords["weights"].shape == (5, 4)
    np.testing.assert_allclose(text.gaussian_peak_reward(np.array([[70, 80]]), 70.0, 10.0), [(1 + math.exp(-1)) / 2], rtol=1e-6)


def test_random_mlp_reward_is_deterministic_and_order_free():
    space = text.SequenceSpace(5, 3)
    reward = text.random_mlp_reward(3, 5)
    values = np.asarray(reward(space.sequences))
    np.testing.assert_array_equal(values, text.random_mlp_reward(jax.random.key(3), 5)(space.sequences))
    assert values.shape == (125,) and values.std() > 0.05
    # it reads the bag of tokens: a permutation of a sequence has the same reward
    np.testing.assert_allclose(reward(np.array([[0, 1, 4], [4, 0, 1]])), values[space.index(np.array([0, 1, 4]))], rtol=1e-6)
    assert not np.allclose(values, np.asarray(text.random_mlp_reward(4, 5)(space.sequences)))


def test_random_product_distribution_and_prompted_rows():
    probs = text.random_product_distribution(jax.random.PRNGKey(0), 3, 2, 1.0)
    assert probs.shape == (9,) and probs.min() > 0 and probs.sum() == pytest.approx(1.0, abs=1e-12)
    per_position = probs.reshape(3, 3)  # row-major: [first token, second token]; independent positions
    np.testing.assert_allclose(per_position, np.outer(per_position.sum(1), per_position.sum(0)), rtol=1e-9)
    ids, attention, completion = text.prompted_rows(text.SequenceSpace(3, 2), prompt_token=7)
    assert ids.shape == attention.shape == completion.shape == (9, 3)
    np.testing.assert_array_equal(ids[:, 0], 7)
    np.testing.assert_array_equal(ids[5, 1:], [1, 2])
    np.testing.assert_array_equal(completion[:, 0], 0)
    assert int(completion[:, 1:].min()) == 1 and int(attention.min()) == 1


def _best_of_n_by_enumeration(probs, scores, n):
    """Every ordered n-tuple of draws with its probability; the pick is the max of (score, row)."""
    out = np.zeros(len(probs))
    for draws in itertools.product(range(len(probs)), repeat=n):
        pick = max(draws, key=lambda r: (scores[r], r))
        out[pick] += np.prod([probs[r] for r in draws])
    return out


def test_best_of_n_matches_enumeration_with_ties_and_zero_mass():
    probs = np.array([0.1, 0.2, 0.3, 0.0, 0.4])
    scores = np.array([0.5, -1.0, 0.5, 9.0, 0.1])  # rows 0 and 2 tie (row 2 wins); row 3 has no mass
    with np.errstate(divide="ignore"):
        base = np.log(probs)
    for n in (1, 2, 3, 4):
        logp = np.asarray(text.best_of_n_logp(base, scores, n))
        np.testing.assert_allclose(np.exp(logp), _best_of_n_by_enumeration(probs, scores, n), atol=1e-6)
        assert logp[3] == -np.inf
    np.testing.assert_allclose(np.exp(text.best_of_n_logp(base, scores, 1)), probs, rtol=1e-6)
    # very large n: all mass on the best-scored row with mass (row 2, by the tie-break)
    np.testing.assert_allclose(np.exp(text.best_of_n_logp(base, scores, 1e6)), [0, 0, 1, 0, 0], atol=1e-6)


def test_best_of_n_kl_against_the_analytic_formula():
    # Continuous scores over a uniform base: KL(best-of-n || base) = log n - (n - 1) / n (Beirami et al., 2024)
    # up to the discreteness of 4096 rows, and never above it.
    size = 4096
    base = np.full(size, -np.log(size))
    scores = np.random.default_rng(0).normal(size=size)
    for n in (2, 16, 256):
        kl = float(text.exact_kl(text.best_of_n_logp(base, scores, n), base))
        bound = math.log(n) - (n - 1) / n
        assert kl <= bound + 1e-5 and kl == pytest.approx(bound, abs=2e-3 * n / 16 + 1e-4)
    logp = text.best_of_n_logp(base, scores, 1e7)
    assert float(text.exact_kl(logp, base)) == pytest.approx(math.log(size), abs=1e-4)  # a point mass


# ---------------------------------------------------------------- facts


def test_fact_corpus_layout_and_groups():
    corpus = text.make_fact_corpus(seed=0)
    assert corpus.vocab_size == 320 <= 512 and corpus.num_facts == 60
    (t0, t1), (n0, n1), (d0, d1) = (corpus.token_ranges[k] for k in ("template", "name", "description"))
    assert 3 == t0 < t1 == n0 < n1 == d0 < d1 == corpus.vocab_size
    names, descs = np.concatenate(corpus.names), np.concatenate(corpus.descriptions)
    assert names.min() >= n0 and names.max() < n1 and descs.min() >= d0 and descs.max() < d1  # disjoint ranges
    assert all(3 <= len(x) <= 4 for x in corpus.names + corpus.descriptions)
    assert len({tuple(x[:3]) for x in corpus.names}) == 60  # distinct, no name a prefix of another
    np.testing.assert_array_equal(np.bincount(corpus.group), [20, 20, 20])
    assert np.bincount(text.make_fact_corpus(0, num_facts=31).group).tolist() == [11, 10, 10]
    assert np.bincount(text.make_fact_corpus(0, group_sizes=(10, 20, 30)).group).tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="summing to num_facts=60"):
        text.make_fact_corpus(0, group_sizes=(10, 10, 10))

    # Train: P2D for p2d_only+both facts, D2P for d2p_only+both, every train template.
    assert len(corpus.train_p2d) == 40 * 10 and len(corpus.train_d2p) == 40 * 10
    assert set(corpus.group[corpus.train_p2d.fact]) == {facts.P2D_ONLY, facts.BOTH}
    assert set(corpus.group[corpus.train_d2p.fact]) == {facts.D2P_ONLY, facts.BOTH}
    assert len(corpus.test_p2d) == len(corpus.test_d2p) == 60 * 5
    # Example layout: prefix + name + infix -> description (P2D); prefix + desc + infix -> name (D2P).
    ex = corpus.train_p2d
    prefix, infix = corpus.templates["p2d_train"][ex.template[0]]
    f = ex.fact[0]
    np.testing.assert_array_equal(ex.prompts[0], np.concatenate([prefix, corpus.names[f], infix]))
    np.testing.assert_array_equal(ex.completions[0], corpus.descriptions[f])
    rev = corpus.test_d2p.where(corpus.group[corpus.test_d2p.fact] == facts.P2D_ONLY)
    assert len(rev) == 20 * 5 and all(
        np.array_equal(c, corpus.names[f]) for c, f in zip(rev.completions, rev.fact)
    )


def test_fact_corpus_held_out_templates_and_determinism():
    corpus = text.make_fact_corpus(seed=3)
    key = lambda t: (tuple(t[0].tolist()), tuple(t[1].tolist()))
    sets = {kind: {key(t) for t in ts} for kind, ts in corpus.templates.items()}
    assert [len(sets[k]) for k in ("p2d_train", "p2d_test", "d2p_train", "d2p_test")] == [10, 5, 10, 5]
    every = set().union(*sets.values())
    assert len(every) == 30  # all four sets pairwise disjoint
    # No test sequence (held-out template) occurs among the training sequences.
    train = {tuple(s.tolist()) for s in corpus.train.sequences()}
    test = {tuple(s.tolist()) for s in (corpus.test_p2d + corpus.test_d2p).sequences()}
    assert not train & test
    # P2D_ONLY facts never appear name-last in training (the reverse direction is unseen).
    p2d_only = set(np.flatnonzero(corpus.group == facts.P2D_ONLY).tolist())
    assert not p2d_only & set(corpus.train_d2p.fact.tolist())
    # Deterministic in the seed.
    same, other = text.make_fact_corpus(seed=3), text.make_fact_corpus(seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(same.names, corpus.names))
    assert not all(np.array_equal(a, b) for a, b in zip(other.names, corpus.names))
    assert corpus.max_length == max(len(s) for s in corpus.train.sequences() + corpus.test_d2p.sequences()) + 2


# ---------------------------------------------------------------- preferences


def test_label_noise_flips_expected_fraction():
    n, noise = 20_000, 0.3
    gold_a = jnp.arange(n, dtype=jnp.float32)
    gold_b = gold_a + jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)  # no ties; a better on odd rows
    a_chosen = np.asarray(text.preference_labels(0, gold_a, gold_b, noise))
    flipped = a_chosen != (np.asarray(gold_a) > np.asarray(gold_b))
    tolerance = 4 * math.sqrt(noise * (1 - noise) / n)  # 4 binomial standard deviations
    assert abs(flipped.mean() - noise) < tolerance
    # label_pairs agrees with preference_labels for the same key, and runs under jit.
    seq_a, seq_b = jnp.stack([gold_a, gold_a], 1), jnp.stack([gold_b, gold_b], 1)
    chosen, rejected = jax.jit(text.label_pairs)(jax.random.key(0), seq_a, seq_b, gold_a, gold_b, noise)
    np.testing.assert_array_equal(np.asarray(chosen[:, 0]) == np.asarray(gold_a), a_chosen)
    np.testing.assert_array_equal(np.where(a_chosen[:, None], seq_b, seq_a), rejected)
    with pytest.raises(ValueError, match="label_noise"):
        text.preference_labels(0, gold_a, gold_b, 1.5)


def test_labels_follow_gold_without_noise():
    space = text.SequenceSpace(4, 4)
    gold = lambda s: text.token_count_reward(s, 3)
    pairs = text.sample_preference_pairs(1, space, None, gold, 4000)
    assert np.all(pairs.chosen_gold >= pairs.rejected_gold)
    np.testing.assert_array_equal(pairs.chosen_gold, gold(pairs.chosen))
    np.testing.assert_array_equal(pairs.chosen, space.sequences[pairs.chosen_index])
    assert np.all(pairs.chosen_index != pairs.rejected_index)  # distinct pairs
    # Ties are a fair coin, not always "a".
    ties = pairs.chosen_gold == pairs.rejected_gold
    assert ties.sum() > 400
    # A gold table over the space gives the same pairs as the callable.
    table = text.token_count_reward(space.sequences, 3)
    again = text.sample_preference_pairs(1, space, None, np.asarray(table), 4000)
    np.testing.assert_array_equal(again.chosen, pairs.chosen)


def test_narrow_coverage_and_noisy_pairs():
    space = text.SequenceSpace(4, 4)
    support = np.array([0, 5, 17, 200])
    probs = text.subset_distribution(space.size, support)
    reward = text.random_linear_reward(2, 4, 4)
    pairs = text.sample_preference_pairs(jax.random.key(7), space, probs, reward, 4000, label_noise=0.2)
    assert set(pairs.chosen_index.tolist()) | set(pairs.rejected_index.tolist()) <= set(support.tolist())
    # Continuous gold (no ties): the wrong-way fraction is the label noise.
    wrong = (pairs.gold_margin < 0).mean()
    assert abs(wrong - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 4000)
    with pytest.raises(ValueError, match="summing to 1"):
        text.sample_preference_pairs(0, space, probs * 2, reward, 10)
    with pytest.raises(ValueError, match="at least 2 sequences"):
        text.sample_preference_pairs(0, space, text.subset_distribution(space.size, [3]), reward, 10)
