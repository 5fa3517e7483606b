"""A verifiable task and a noisy verifier for RL with verifiable rewards (RLVR).

    task = modular_sum_task(num_digits=3, modulus=10)
    task.prompts          # [N, num_digits + 2] token ids: BOS, the digits, "="  (every digit tuple once)
    task.answers          # [N] the correct answer token: the digits' sum mod ``modulus``
    clean = task.verify(prompt_ids, completion_ids)           # [B] 1.0 where the first completion token is right
    noisy = verifier_channel(key, clean, rho0=0.1, rho1=0.2)  # [B] 0/1 after false positives / negatives

The channel is Cai et al.'s (2025) Definition 3.1: a correct response is rejected with probability ``rho1``
(a false negative), a wrong one accepted with probability ``rho0`` (a false positive), independently of
everything else. Token ids: digits ``0..modulus-1`` (the answers among them), then ``=``, BOS, EOS and PAD.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ModularSumTask:
    """Every prompt ``BOS d_1 .. d_k =`` with digits in ``[0, modulus)``, and its answer ``sum(d) mod modulus``."""

    num_digits: int
    modulus: int
    prompts: np.ndarray  # [N, num_digits + 2] int32
    answers: np.ndarray  # [N] int32

    @property
    def equals_id(self) -> int:
        return self.modulus

    @property
    def bos_id(self) -> int:
        return self.modulus + 1

    @property
    def eos_id(self) -> int:
        return self.modulus + 2

    @property
    def pad_id(self) -> int:
        return self.modulus + 3

    @property
    def vocab_size(self) -> int:
        return self.modulus + 4

    def answer_of(self, prompt_ids):
        """The correct answer token [B] of prompts [B, num_digits + 2] (jittable)."""
        digits = jnp.asarray(prompt_ids)[:, 1 : 1 + self.num_digits]
        return digits.sum(axis=1) % self.modulus

    def verify(self, prompt_ids, completion_ids):
        """The clean verdict [B] float32: 1 where the completion's first token is the answer (jittable)."""
        return (jnp.asarray(completion_ids)[:, 0] == self.answer_of(prompt_ids)).astype(jnp.float32)


def modular_sum_task(num_digits: int = 3, modulus: int = 10) -> ModularSumTask:
    """All ``modulus ** num_digits`` prompts, in lexicographic order of their digits."""
    if num_digits < 1 or modulus < 2:
        raise ValueError(f"modular_sum_task: expected num_digits >= 1 and modulus >= 2, got {num_digits} and {modulus}")
    digits = np.array(list(itertools.product(range(modulus), repeat=num_digits)), np.int32)
    n = len(digits)
    prompts = np.concatenate([np.full((n, 1), modulus + 1), digits, np.full((n, 1), modulus)], axis=1).astype(np.int32)
    return ModularSumTask(num_digits, modulus, prompts, (digits.sum(axis=1) % modulus).astype(np.int32))


def verifier_channel(key, clean_rewards, rho0, rho1):
    """Observed 0/1 verdicts [B] from clean 0/1 rewards [B]: each 1 becomes 0 with probability ``rho1``
    (false negative), each 0 becomes 1 with probability ``rho0`` (false positive). Jittable; the rates
    may be traced scalars."""
    for name, rate in (("rho0", rho0), ("rho1", rho1)):
        if isinstance(rate, (int, float, np.integer, np.floating)) and not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"verifier_channel: {name} must be a probability in [0, 1], got {rate}")
    clean = jnp.asarray(clean_rewards, jnp.float32)
    flip = jax.random.uniform(key, clean.shape) < jnp.where(clean > 0.5, rho1, rho0)
    return jnp.where(flip, 1.0 - clean, clean)
