"""The exact setting that f-dpg, kl-posterior and lsc-rewards share: every sequence of ``length`` tokens over
``vocab_size`` after a one-token prompt (``envs.text.SequenceSpace``), a Llama-style LM whose log-probs of the
whole space come from one forward pass, and a random-MLP reward standardised over the space."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

import jax

from envs.text import SequenceSpace, prompted_rows, random_mlp_reward
from experiments.common import setup_run, write_settings_config
from rljax.lm import train as lm_train
from rljax.lm.model import LMConfig, init_params


@dataclasses.dataclass(frozen=True)
class SpaceSettings:
    """The space's and the LM's sizes; the experiments' ``Settings`` extend it (all ``--set``-able)."""

    vocab_size: int = 8
    length: int = 4
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4


@dataclasses.dataclass(frozen=True)
class ExactSpace:
    space: SequenceSpace
    model: LMConfig
    rows: tuple  # input_ids, attention_mask, completion_mask of every sequence after the prompt token 0

    def logp(self, params) -> jax.Array:
        """log pi(y) [S] of every sequence under the LM ``params``."""
        return lm_train.sequence_logps(params, self.model, *self.rows)[0]

    def random_policies(self, key, n: int) -> Any:
        """``n`` random initialisations of the LM, stacked (one per seed)."""
        return jax.vmap(lambda k: init_params(self.model, k))(jax.random.split(key, n))


def exact_space(settings: SpaceSettings) -> ExactSpace:
    """The space and LM of ``settings``."""
    space = SequenceSpace(settings.vocab_size, settings.length)
    model = LMConfig(settings.vocab_size, settings.hidden_size, settings.num_layers, settings.num_heads,
                     max_position_embeddings=settings.length + 1)
    return ExactSpace(space, model, prompted_rows(space, 0))


def start_run(args: argparse.Namespace, name: str, settings: SpaceSettings) -> tuple[str, ExactSpace]:
    """The run directory (``setup_run``, with ``config.json`` written) and the exact space of ``settings``."""
    run_dir = setup_run(args, name)
    exact = exact_space(settings)
    write_settings_config(run_dir, args, name, settings, model=exact.model)
    return run_dir, exact


def standardised_mlp_reward(seed: int, space: SequenceSpace) -> tuple[Callable, jax.Array]:
    """``random_mlp_reward(seed)`` shifted and scaled to mean 0 and std 1 over ``space``: the function
    (sequences [..., L] -> [...]) and its values on the space [S]."""
    raw = random_mlp_reward(seed, space.vocab_size)
    values = raw(space.sequences)
    mean, std = float(values.mean()), float(values.std())
    reward_of = lambda seqs: (raw(seqs) - mean) / std  # noqa: E731
    return reward_of, reward_of(space.sequences)
