"""Meta-training with evolution strategies (evosax's OpenES): whole training runs as fitness.

Each generation is ONE jitted call: ask for a population of meta-parameters,
run every member's full inner training (vmapped over the population and over
``seeds_per_member`` tasks, optionally sharded over a ``pop`` mesh axis), shape
the fitnesses, tell. The host loop around it prints progress, writes
``metrics.jsonl`` (one record per generation) and checkpoints the ES state with
orbax, so an interrupted meta-training run resumes exactly.

    fitness = lpo.lifetime_fitness(config)          # (meta_params, key) -> scalar, maximised
    result = meta_train(fitness, init_params, ESConfig(population_size=32, generations=30), key)
    result.mean                                      # the evolved meta-parameters

Antithetic sampling: evosax draws members i and i + P/2 as mean +- sigma z. Task
keys (``task_sharing``): ``"population"`` gives every member the same inner-run
keys (common random numbers, as LPO's code); ``"pair"`` gives each antithetic
pair its own keys, both members the same (as groove's TA-LPG).

Fitness shaping (``fitness_shaping``): ``"centered_rank"`` (ranks in [-0.5, 0.5],
OpenAI-ES) or ``"pairwise"`` (per antithetic pair, winner 1 and loser 0, ties 0.5:
groove's rank for TA-LPG; the ES gradient then only sees which of the pair won).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import evosax.algorithms as evosax_algorithms
import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn
from flax import traverse_util
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from rljax.core import sharding as sharding_lib
from rljax.core.checkpoint import Checkpointer
from rljax.core.config import ConfigError, require, require_one_of, require_positive, to_dict
from rljax.core.logging import MetricsWriter

FITNESS_SHAPINGS = ("centered_rank", "pairwise")
TASK_SHARINGS = ("population", "pair")

Fitness = Callable[[Any, jax.Array], jax.Array]  # (meta_params, key) -> scalar, higher is better


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """Static settings of :func:`meta_train`: evosax's OpenES (Salimans et al., 2017) with antithetic pairs.

    Fitness shaping and task-key sharing are as in the module docstring; ``shard`` splits the population
    over devices.
    """

    population_size: int = 32  # even: antithetic pairs
    generations: int = 30
    sigma: float = 0.1  # perturbation std
    learning_rate: float = 0.01  # Adam on the ES gradient
    seeds_per_member: int = 1  # inner runs per member; fitness = their mean
    fitness_shaping: str = "centered_rank"
    task_sharing: str = "population"
    shard: bool = False  # split the population over a "pop" mesh axis across devices
    checkpoint_every: int = 5  # generations; 0: only at the end
    progress: bool = True

    def __post_init__(self):
        require_positive(self, "population_size", "generations", "sigma", "learning_rate", "seeds_per_member")
        require(self.population_size % 2 == 0,
                f"ESConfig.population_size: expected an even number (antithetic pairs), got {self.population_size}")
        require_one_of(self, "fitness_shaping", FITNESS_SHAPINGS)
        require_one_of(self, "task_sharing", TASK_SHARINGS)
        require(self.checkpoint_every >= 0, f"ESConfig.checkpoint_every: expected >= 0, got {self.checkpoint_every}")


def pairwise_rank_fitness(fitness: jax.Array) -> jax.Array:
    """Per antithetic pair (i, i + P/2): 1 for the winner, 0 for the loser, 0.5 each on a tie. ``[P] -> [P]``."""
    half = fitness.shape[0] // 2
    plus, minus = fitness[:half], fitness[half:]
    plus_score = jnp.where(plus > minus, 1.0, jnp.where(plus < minus, 0.0, 0.5))
    return jnp.concatenate([plus_score, 1.0 - plus_score])


def _minimised_shaping(kind: str):
    """evosax minimises and is handed -fitness: centred ranks of it, or minus the pairwise scores of fitness."""
    if kind == "centered_rank":
        return centered_rank_fitness_shaping_fn
    return lambda population, negative_fitness, state, params: -pairwise_rank_fitness(-negative_fitness)


def make_strategy(config: ESConfig, init_params: Any) -> evosax_algorithms.Open_ES:
    """evosax's OpenES (antithetic pairs, Adam on the ES gradient, constant sigma) around ``init_params``."""
    return evosax_algorithms.Open_ES(
        population_size=config.population_size, solution=init_params, use_antithetic_sampling=True,
        optimizer=optax.adam(config.learning_rate), std_schedule=optax.constant_schedule(config.sigma),
        fitness_shaping_fn=_minimised_shaping(config.fitness_shaping),
    )


def task_keys(config: ESConfig, key: jax.Array) -> jax.Array:
    """Inner-run keys ``[P, seeds_per_member, 2]``, shared per the config's ``task_sharing``."""
    members, seeds = config.population_size, config.seeds_per_member
    if config.task_sharing == "population":
        return jnp.broadcast_to(jax.random.split(key, seeds), (members, seeds, 2))
    pair_keys = jax.random.split(key, (members // 2) * seeds).reshape(members // 2, seeds, 2)
    return jnp.concatenate([pair_keys, pair_keys])


def evaluate_population(fitness_fn: Fitness, population: Any, keys: jax.Array) -> jax.Array:
    """Fitness ``[P]``: the mean over each member's ``keys [P, S, 2]`` inner runs."""
    per_seed = jax.vmap(lambda params, ks: jax.vmap(lambda k: fitness_fn(params, k))(ks))(population, keys)
    return per_seed.mean(axis=1)


@dataclasses.dataclass
class MetaState:
    """Everything a meta-training run carries between generations (orbax-checkpointed)."""

    es: Any
    key: jax.Array


@dataclasses.dataclass
class MetaResult:
    """What :func:`meta_train` returns: the evolved ES mean, the final evosax state, records and timings.

    ``records`` holds only the generations run by this call (not those restored on resume).
    """

    mean: Any  # the evolved meta-parameters (the ES mean), unravelled like init_params
    state: Any  # final evosax state
    records: list[dict[str, Any]]  # one per generation
    compile_seconds: float
    run_seconds: float  # wall time of the jitted generations only


def make_generation(fitness_fn: Fitness, strategy, config: ESConfig, mesh=None):
    """``generation(es_state, key) -> (es_state, fitness [P], metrics)``: ask, evaluate, tell."""
    es_params = strategy.default_params

    def generation(es_state, key):
        ask_key, task_key, tell_key = jax.random.split(key, 3)
        population, es_state = strategy.ask(ask_key, es_state, es_params)
        keys = task_keys(config, task_key)
        if mesh is None:
            fitness = evaluate_population(fitness_fn, population, keys)
        else:  # each device trains its slice of the population; no communication until tell
            split = P(mesh.axis_names[0])
            fitness = jax.shard_map(
                lambda pop, ks: evaluate_population(fitness_fn, pop, ks), mesh=mesh,
                in_specs=(split, split), out_specs=split, check_vma=False,
            )(population, keys)
        # evosax minimises: hand it -fitness.
        es_state, _ = strategy.tell(tell_key, population, -fitness, es_state, es_params)
        metrics = {"fitness_mean": fitness.mean(), "fitness_max": fitness.max(), "fitness_min": fitness.min(),
                   "fitness_std": fitness.std()}
        return es_state, fitness, metrics

    return generation


def meta_train(
    fitness_fn: Fitness,
    init_params: Any,
    config: ESConfig,
    key: jax.Array,
    *,
    run_dir: str | None = None,
    resume: bool = False,
    run_config: dict[str, Any] | None = None,
    stop_after_generations: int | None = None,
    description: str = "meta-train",
) -> MetaResult:
    """Evolve ``init_params`` (the ES's starting mean) to maximise ``fitness_fn``.

    ``run_dir``: where ``metrics.jsonl`` and ``checkpoints/`` go (None: nothing written).
    ``resume``: continue from the latest checkpoint there. ``run_config`` is stored
    with the checkpoints; resuming under a different one is refused.
    ``stop_after_generations``: end early, as if interrupted (checkpoint included).
    """
    strategy = make_strategy(config, init_params)
    mesh = None
    if config.shard:
        mesh = sharding_lib.make_mesh("pop")
        if config.population_size % mesh.devices.size:
            raise ConfigError(
                f"ESConfig.shard: population_size = {config.population_size} does not split evenly over "
                f"{mesh.devices.size} devices"
            )
    init_key, key = jax.random.split(key)
    state = MetaState(es=strategy.init(init_key, init_params, strategy.default_params), key=key)
    first = 0
    checkpointer = None
    if run_dir is not None:
        saved = {"es": to_dict(config), "run": run_config or {}}
        for free in ("progress", "checkpoint_every", "generations", "shard"):  # may change on resume
            saved["es"].pop(free)
        checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), saved)
        if resume and checkpointer.latest_step() is not None:
            restored, meta = checkpointer.restore({"es": state.es, "key": state.key})
            state = MetaState(es=restored["es"], key=restored["key"])
            first = int(meta["generation"])
    writer = MetricsWriter(run_dir, resume_update=first if resume else None) if run_dir else None

    generation = jax.jit(make_generation(fitness_fn, strategy, config, mesh), donate_argnums=0)
    start = time.perf_counter()
    compiled = generation.lower(state.es, state.key).compile()
    compile_seconds = time.perf_counter() - start

    last = config.generations if stop_after_generations is None else min(config.generations, stop_after_generations)
    records: list[dict[str, Any]] = []
    run_seconds = 0.0
    bar = tqdm(total=config.generations, initial=first, desc=description, disable=not config.progress)
    for g in range(first, last):
        gen_key, key = jax.random.split(state.key)
        start = time.perf_counter()
        es_state, fitness, metrics = compiled(state.es, gen_key)
        fitness = np.asarray(fitness)
        seconds = time.perf_counter() - start
        run_seconds += seconds
        state = MetaState(es=es_state, key=key)
        record = {"update": g + 1, "generation": g + 1, "seconds": seconds,
                  **{k: float(v) for k, v in metrics.items()}}
        records.append(record)
        if writer:
            writer.write(record)
            writer.flush()
        bar.update(1)
        bar.set_postfix(mean=f"{record['fitness_mean']:.1f}", max=f"{record['fitness_max']:.1f}")
        done = g + 1
        if checkpointer and ((config.checkpoint_every and done % config.checkpoint_every == 0) or done == last):
            checkpointer.save(done, {"es": state.es, "key": state.key}, {"generation": done})
    bar.close()
    if writer:
        writer.close()
    if checkpointer:
        checkpointer.close()
    return MetaResult(
        mean=strategy.get_mean(state.es), state=state.es, records=records,
        compile_seconds=compile_seconds, run_seconds=run_seconds,
    )


def save_meta_params(path: str, params: Any) -> None:
    """Write meta-parameters (e.g. an evolved drift network) as safetensors, keys = '/'-joined paths."""
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, path)


def load_meta_params(path: str, like: Any) -> Any:
    """Read :func:`save_meta_params` output into the structure of ``like``; errors name missing or misshapen keys."""
    from safetensors.numpy import load_file

    saved = load_file(path)
    expected = traverse_util.flatten_dict(like, sep="/")
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: meta-parameters do not match; missing {missing}, unexpected {extra}")
    for name, value in expected.items():
        if saved[name].shape != np.shape(value):
            raise ValueError(f"{path}: {name} has shape {saved[name].shape}, expected {np.shape(value)}")
    return traverse_util.unflatten_dict({k: jnp.asarray(saved[k]) for k in expected}, sep="/")
