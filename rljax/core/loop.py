"""The thin host loop around a pure trainer.

The same ``Trainer.update`` that ``train(key, hparams)`` scans over is run here in
jitted chunks of ``chunk_updates`` updates, vmapped over seeds, with the state
donated to each chunk. Between chunks the host writes ``metrics.jsonl``, updates
the progress bar, evaluates and checkpoints. All training state is one pytree,
so a run restored from a checkpoint continues bit-identically.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from rljax.core import sharding as sharding_lib
from rljax.core.checkpoint import Checkpointer
from rljax.core.config import broadcast_hparams, require
from rljax.core.logging import MetricsWriter, read_metrics
from rljax.core.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Host-loop settings for :func:`run`: chunk size, eval/checkpoint cadence, logging and sharding.

    Static and not part of the training state; ``*_every_chunks`` count jitted chunks, not updates.
    """

    chunk_updates: int = 10  # updates per jitted call
    eval_every_chunks: int = 0  # 0: evaluate only at the end
    eval_episodes: int = 16  # per seed
    checkpoint_every_chunks: int = 1  # 0: checkpoint only at the end
    progress: bool = True
    tensorboard: bool = False
    stop_after_updates: int | None = None  # end early (as if interrupted), checkpoint included
    shard: str | None = None  # None (one device), "pop" (runs over devices) or "envs" (env batch over devices)


@dataclasses.dataclass
class LoopResult:
    """What :func:`run` returns: the final state of all seeds, the per-update records and the timings.

    ``updates_done`` counts from the start of the run (a resumed run includes the restored updates).
    """

    state: Any  # final training state, leading axis = seeds
    records: list[dict[str, Any]]  # one per update, as in metrics.jsonl
    final_eval: dict[str, np.ndarray] | None  # evaluate() outputs, [seeds, episodes, ...]
    compile_seconds: float
    run_seconds: float  # wall time of the jitted chunks only (excludes compile and host work)
    updates_done: int


def _compile(fn, *args):
    """AOT-compile ``fn`` so compile time is measured apart from run time."""
    if jax.config.jax_disable_jit:  # --debug: run op by op
        return fn, 0.0
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _records(metrics: dict[str, np.ndarray], first_update: int, steps_per_update: int) -> list[dict[str, Any]]:
    """Per-update records from chunk metrics ``{name: [seeds, n, ...]}``."""
    n = next(iter(metrics.values())).shape[1]
    out = []
    for i in range(n):
        update = first_update + i + 1
        record: dict[str, Any] = {"update": update, "env_steps": update * steps_per_update}
        for name, value in metrics.items():
            record[name] = value[:, i].mean(axis=0).tolist()
        if "episode_return" in metrics:
            record["episode_return/per_seed"] = metrics["episode_return"][:, i].tolist()
        out.append(record)
    return out


def _eval_record(ev: dict[str, np.ndarray]) -> dict[str, Any]:
    """RL trainers return episode ``return`` [seeds, episodes]; others any scalars per seed."""
    if "return" in ev:
        return {"eval_return": float(np.mean(ev["return"])), "eval_return/per_seed": ev["return"].mean(axis=1).tolist()}
    record = {}
    for name, value in ev.items():
        record[f"eval/{name}"] = float(np.mean(value))
        record[f"eval/{name}/per_seed"] = np.asarray(value).reshape(len(value), -1).mean(axis=1).tolist()
    return record


def _sharded(chunk, shardings):
    """Keep the state's sharding across chunks (so the compiled chunk is reused)."""
    if shardings is None:
        return chunk

    def constrained(state):
        state, metrics = chunk(state)
        return jax.lax.with_sharding_constraint(state, shardings), metrics

    return constrained


def run(
    trainer: Trainer,
    key: jax.Array,
    hparams: Any,
    *,
    num_seeds: int,
    run_dir: str | None = None,
    config_dict: dict[str, Any] | None = None,
    loop: LoopConfig = LoopConfig(),
    resume: bool = False,
) -> LoopResult:
    """Train ``num_seeds`` seeds of ``trainer`` side by side (one vmapped program).

    Seed ``i`` uses ``jax.random.split(key, num_seeds)[i]``; ``hparams`` leaves are
    scalars (shared) or have a leading axis of size ``num_seeds`` (a sweep).
    With ``run_dir``, writes ``metrics.jsonl`` and ``checkpoints/`` there;
    ``resume`` continues from the latest checkpoint in it.
    """
    require(loop.chunk_updates > 0, f"LoopConfig.chunk_updates: expected a positive number, got {loop.chunk_updates}")
    require(num_seeds > 0, f"num_seeds: expected a positive number, got {num_seeds}")
    seed_keys = jax.random.split(key, num_seeds)
    eval_key = jax.random.fold_in(key, 0x7FFFFFFF)  # never touches the training key stream
    hparams = broadcast_hparams(hparams, num_seeds)

    init_fn = jax.jit(jax.vmap(trainer.init))
    state = init_fn(seed_keys, hparams)
    shardings = None
    if loop.shard is not None:
        mesh = sharding_lib.make_mesh(loop.shard)
        shardings = sharding_lib.state_shardings(state, mesh, loop.shard)
        state = jax.device_put(state, shardings)

    checkpointer = None
    start_update = 0
    if run_dir is not None:
        checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), config_dict or {"config": repr(trainer.config)})
        if resume:
            state, meta = checkpointer.restore(state)
            start_update = int(meta["update"])
    # Every process checkpoints (orbax coordinates hosts); only process 0 writes logs.
    log_dir = run_dir if sharding_lib.is_logging_process() else None
    writer = MetricsWriter(log_dir, tensorboard=loop.tensorboard, resume_update=start_update if resume else None)
    records = read_metrics(run_dir) if (resume and run_dir and os.path.exists(os.path.join(run_dir, "metrics.jsonl"))) else []

    evaluate = jax.jit(jax.vmap(trainer.evaluate))
    chunk_fns: dict[int, Any] = {}
    compile_seconds, run_seconds = 0.0, 0.0

    last_update = trainer.num_updates
    if loop.stop_after_updates is not None:
        last_update = min(last_update, loop.stop_after_updates)
    steps_per_update = trainer.env_steps_per_update
    bar = tqdm(
        total=trainer.num_updates * steps_per_update * num_seeds, initial=start_update * steps_per_update * num_seeds,
        unit="step", unit_scale=True, disable=not loop.progress, dynamic_ncols=True, mininterval=1.0,
    )

    def do_eval(update: int) -> dict[str, np.ndarray]:
        keys = jax.random.split(jax.random.fold_in(eval_key, update), num_seeds)
        return jax.device_get(evaluate(state, keys))

    update, chunk_index, final_eval = start_update, 0, None
    try:
        while update < last_update:
            n = min(loop.chunk_updates, last_update - update)
            if n not in chunk_fns:
                placement = {"in_shardings": (shardings,)} if shardings is not None else {}
                fn = jax.jit(
                    _sharded(jax.vmap(lambda s, n=n: trainer.run_updates(s, n)), shardings),
                    donate_argnums=0, **placement,
                )
                chunk_fns[n], seconds = _compile(fn, state)
                compile_seconds += seconds
            start = time.perf_counter()
            state, metrics = chunk_fns[n](state)
            metrics = jax.device_get(metrics)  # blocks until the chunk is done
            run_seconds += time.perf_counter() - start
            new_records = _records(metrics, update, steps_per_update)
            update += n
            chunk_index += 1

            is_last = update >= last_update
            if is_last or (loop.eval_every_chunks and chunk_index % loop.eval_every_chunks == 0):
                ev = do_eval(update)
                new_records[-1].update(_eval_record(ev))
                if is_last:
                    final_eval = ev
            for record in new_records:
                writer.write(record)
            writer.flush()
            records += new_records
            if checkpointer and (is_last or (loop.checkpoint_every_chunks and chunk_index % loop.checkpoint_every_chunks == 0)):
                checkpointer.save(update, state, {"update": update, "env_steps": update * steps_per_update})
            bar.update(n * steps_per_update * num_seeds)
            last = new_records[-1]
            postfix = {"return": f"{np.mean(last['episode_return']):.1f}"} if "episode_return" in last else {}
            if "loss" in last:
                postfix["loss"] = f"{np.mean(last['loss']):.4g}"
            if "eval_return" in last:
                postfix["eval"] = f"{last['eval_return']:.1f}"
            bar.set_postfix(postfix, refresh=False)
    finally:
        bar.close()
        writer.close()
        if checkpointer:
            checkpointer.close()
    if final_eval is None and update == last_update:  # resumed a finished run
        final_eval = do_eval(update)
    return LoopResult(state, records, final_eval, compile_seconds, run_seconds, update)
