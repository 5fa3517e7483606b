"""Synthetic text tasks at the token-id level, deterministic from a seed.

    envs.text.enumerable    SequenceSpace (all V**L sequences), gold rewards, exact KL/entropy
    envs.text.facts         fictitious-fact corpora for the Reversal Curse
    envs.text.preferences   preference pairs labelled by a gold reward, with label noise
    envs.text.verifier      a verifiable arithmetic task and a noisy binary verifier (RLVR)

These are data generators for the LM experiments, not step/reset environments,
so they are not in the ``envs.make`` registry.
"""

from envs.text.enumerable import (
    MAX_SEQUENCES,
    SequenceSpace,
    best_of_n_logp,
    exact_entropy,
    exact_expectation,
    exact_kl,
    gaussian_peak_reward,
    position_weighted_reward,
    prompted_rows,
    random_linear_reward,
    random_mlp_reward,
    random_product_distribution,
    token_count_reward,
)
from envs.text.facts import BOTH, D2P, D2P_ONLY, P2D, P2D_ONLY, FactCorpus, FactExamples, make_fact_corpus
from envs.text.preferences import (
    PreferencePairs,
    label_pairs,
    preference_labels,
    sample_preference_pairs,
    subset_distribution,
)
from envs.text.verifier import ModularSumTask, modular_sum_task, verifier_channel

__all__ = [
    "BOTH", "D2P", "D2P_ONLY", "FactCorpus", "FactExamples", "MAX_SEQUENCES", "ModularSumTask", "P2D", "P2D_ONLY", "PreferencePairs",
    "SequenceSpace", "best_of_n_logp", "exact_entropy", "exact_expectation", "exact_kl", "gaussian_peak_reward",
    "label_pairs", "make_fact_corpus", "modular_sum_task", "position_weighted_reward", "preference_labels", "prompted_rows",
    "random_linear_reward", "random_mlp_reward", "random_product_distribution", "sample_preference_pairs",
    "subset_distribution", "token_count_reward", "verifier_channel",
]
