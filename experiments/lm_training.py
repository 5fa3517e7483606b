"""One driver for the LM trainers on JSONL data (TRL's ``trl sft|reward|dpo``, in JAX).

    python -m experiments sft          --data sft.jsonl  --model llama-tiny --tokenizer byte
    python -m experiments reward-model --data prefs.jsonl --model path/to/hf_dir
    python -m experiments dpo          --data prefs.jsonl --model path/to/hf_dir --init runs/sft/<time>
    python -m experiments dpo ... --loss-type sigmoid sft --loss-weights 1 0.005      # RPO

``--model`` is a Hugging Face directory (``config.json`` + ``*.safetensors``,
imported by ``rljax.lm.hf_import``; its ``tokenizer.json`` is the default
tokenizer) or a preset name (``llama-tiny``, ``gpt2-tiny``: random init, byte
tokenizer). ``--init DIR`` starts from the last checkpoint of an earlier run
(e.g. DPO from an SFT run; seed 0's params). Writes ``config.json``,
``metrics.jsonl`` (TRL's metric names), ``result.json``, ``curve.png`` and
``checkpoints/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

from experiments.common import add_run_arguments, setup_run
from rljax.core import loop as loop_lib
from rljax.core.checkpoint import Checkpointer
from rljax.core.config import ConfigError, to_dict
from rljax.core.logging import write_json
from rljax.core.plotting import plot_metrics
from rljax.lm import data as data_lib
from rljax.lm import hf_import
from rljax.lm.hf_export import save_hf_model
from rljax.lm.model import ATTENTION, DTYPES, gpt2_config, init_params, llama_config, require_attention_backend
from rljax.lm.tokenizers import check_vocab, load_tokenizer
from rljax.lm.train import LMHParams, LMTrainConfig, check_hparams, make_train

PRESETS = {
    "llama-tiny": lambda heads: llama_config(vocab_size=259, hidden_size=128, num_layers=2, num_heads=4, heads=heads),
    "gpt2-tiny": lambda heads: gpt2_config(vocab_size=259, hidden_size=128, num_layers=2, num_heads=4, heads=heads),
}
OBJECTIVES = {"sft": "sft", "reward-model": "reward", "dpo": "dpo"}
PLOTTED = {"sft": ["loss"], "reward": ["loss", "accuracy"], "dpo": ["loss", "rewards/accuracies", "rewards/margins"]}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--data", required=True, help="JSONL: prompt/completion (sft) or prompt/chosen/rejected")
    parser.add_argument("--model", default="llama-tiny", help=f"a Hugging Face directory or one of {sorted(PRESETS)}")
    parser.add_argument("--tokenizer", help="'byte', a tokenizer.json or a directory (default: the model's own, else byte)")
    parser.add_argument("--init", metavar="RUN_DIR", help="start from the latest checkpoint of this run")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (default: the longest row)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences (sft) or pairs per optimiser step")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4; 5e-7 for dpo, as TRL)")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="independent runs (data order, init) side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-parallel", action="store_true", help="split each micro-batch over all devices")
    parser.add_argument("--chunk-updates", type=int, default=0, help="updates per jitted chunk (0: about 20 chunks)")
    if name == "dpo":
        parser.add_argument("--beta", type=float, default=0.1)
        parser.add_argument("--loss-type", nargs="+", default=["sigmoid"], help="TRL's loss_type list")
        parser.add_argument("--loss-weights", nargs="+", type=float, help="one weight per --loss-type")
        parser.add_argument("--label-smoothing", type=float, default=0.0)
        parser.add_argument("--reference", choices=("params", "precomputed"), default="params")
        parser.add_argument("--sft-normalization", choices=("sum", "mean", "seq_mean"), default="sum")
    if name == "reward-model":
        parser.add_argument("--center-rewards-coefficient", type=float, default=0.0,
                            help="weight of mean((r+ + r-)^2), as TRL's RewardConfig (0: off)")
        parser.add_argument("--margin", action="store_true", help="read each pair's Bradley-Terry margin from "
                            "its JSONL key 'margin' (Llama 2's preference strength; TRL's margin column)")
    if name in ("dpo", "reward-model"):
        parser.add_argument("--prefix-sharing", action="store_true", help="run each pair's prompt once, for both "
                            "completions (the same training up to rounding, fewer FLOPs)")
    if name in ("sft", "dpo"):
        parser.add_argument("--logits-chunk", type=int, default=0, help="LMConfig.logits_chunk: unembed N positions "
                            "of every row at a time, never holding all the logits (0: all at once)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="LMConfig.dtype: the compute dtype "
                        "(params keep theirs)")
    parser.add_argument("--attention", choices=ATTENTION, default="xla", help="LMConfig.attention: 'cudnn' is "
                        "cuDNN's fused attention (NVIDIA GPUs; with --dtype bfloat16 or float16)")
    parser.add_argument("--save-hf", action="store_true", help="also write the trained model as a Hugging Face "
                        "checkpoint (config.json + model.safetensors) in RUN_DIR/hf_model, or hf_model/seed_<i> "
                        "for several seeds; transformers loads it (rljax.lm.hf_export)")
    add_run_arguments(parser, name)


def load_model(spec: str, objective: str):
    """(config, params or None, tokenizer default) for ``--model``."""
    heads = ("reward",) if objective == "reward" else ("lm",)
    if spec in PRESETS:
        return PRESETS[spec](heads), None, "byte"
    if not os.path.isdir(spec):
        raise ConfigError(f"--model: expected a Hugging Face directory or one of {sorted(PRESETS)}, got {spec!r}")
    config, params = hf_import.load_hf_model(spec, heads=heads)
    return config, params, spec if os.path.exists(os.path.join(spec, "tokenizer.json")) else "byte"


def params_from_run(run_dir: str, like):
    """Seed 0's params from the latest checkpoint of an earlier LM run, checked against ``like``."""
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), saved)
    try:
        state, _ = checkpointer.restore_raw()
    finally:
        checkpointer.close()
    params = jax.tree.map(lambda x: np.asarray(x)[0], state["params"])
    expected = jax.tree.map(lambda x: x.shape, like)
    got = jax.tree.map(lambda x: x.shape, params)
    if expected != got:
        raise ConfigError(f"--init {run_dir}: its params do not fit --model (expected {expected}, got {got})")
    return params


def run(name: str, args: argparse.Namespace) -> dict:
    objective = OBJECTIVES[name]
    model, params, default_tokenizer = load_model(args.model, objective)
    model = dataclasses.replace(model, dtype=args.dtype, attention=args.attention)
    require_attention_backend(model)
    if objective != "reward":
        model = dataclasses.replace(model, logits_chunk=args.logits_chunk)
    tokenizer = load_tokenizer(args.tokenizer or default_tokenizer)
    check_vocab(tokenizer, model.vocab_size)
    loader = data_lib.load_sft_jsonl if objective == "sft" else data_lib.load_preference_jsonl
    margin = objective == "reward" and args.margin
    data = loader(args.data, tokenizer, args.max_length, extra_keys=("margin",) if margin else ())
    dpo = objective == "dpo"
    config = LMTrainConfig(
        model=model, objective=objective, batch_size=args.batch_size, grad_accum_steps=args.grad_accum,
        num_epochs=args.epochs, warmup_steps=args.warmup_steps, data_parallel=args.data_parallel,
        loss_types=tuple(args.loss_type) if dpo else ("sigmoid",),
        reference=args.reference if dpo else "params",
        sft_normalization=args.sft_normalization if dpo else "sum", prefix_sharing=objective != "sft" and args.prefix_sharing,
    )  # fmt: skip
    hparams = LMHParams(
        learning_rate=args.lr if args.lr is not None else (5e-7 if dpo else 1e-4),
        beta=args.beta if dpo else 0.1, label_smoothing=args.label_smoothing if dpo else 0.0,
        loss_weights=tuple(args.loss_weights) if dpo and args.loss_weights else None,
        center_rewards_coefficient=args.center_rewards_coefficient if objective == "reward" else 0.0,
    )  # fmt: skip
    check_hparams(hparams)  # before the run writes anything
    if args.save_hf and objective == "reward" and hparams.center_rewards_coefficient > 0:
        raise ConfigError("--save-hf with --center-rewards-coefficient > 0: centring trains the reward head's bias, "
                          "which transformers' score layer does not have")
    if params is None:
        params = init_params(model, jax.random.key(args.seed))
    if args.init:
        params = params_from_run(args.init, params)
    run_dir = setup_run(args, name)
    trainer = make_train(config, data, init_params=params)
    chunk = args.chunk_updates or max(1, trainer.num_updates // 20)
    run_config = {"experiment": name, "config": to_dict(config), "hparams": to_dict(hparams), "data": args.data,
                  "model": args.model, "init": args.init, "seeds": args.seeds, "seed": args.seed, "chunk_updates": chunk}
    if not args.resume:
        write_json(os.path.join(run_dir, "config.json"), run_config)
    print(f"{name}: {len(data)} rows x {args.epochs} epochs = {trainer.num_updates} updates, "
          f"{args.seeds} seed(s), model {args.model} ({model.num_params():,} params) -> {run_dir}")
    start = time.perf_counter()
    result = loop_lib.run(
        trainer, jax.random.key(args.seed), hparams, num_seeds=args.seeds, run_dir=run_dir, config_dict=run_config,
        resume=bool(args.resume),
        loop=loop_lib.LoopConfig(chunk_updates=chunk, progress=not args.no_progress, tensorboard=args.tensorboard),
    )
    tokens = result.updates_done * args.batch_size * data.max_length * (1 if objective == "sft" else 2) * args.seeds
    final = result.records[-1] if result.records else {}
    summary = {
        "experiment": name, "updates": result.updates_done, "finished": result.updates_done == trainer.num_updates,
        "wall_seconds": time.perf_counter() - start, "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds, "tokens_per_second": tokens / max(result.run_seconds, 1e-9),
        "final": {k: v for k, v in final.items() if not k.endswith("per_seed")},
    }
    write_json(os.path.join(run_dir, "result.json"), summary)
    if args.save_hf:
        for seed in range(args.seeds):
            out = os.path.join(run_dir, "hf_model", *([f"seed_{seed}"] if args.seeds > 1 else []))
            seed_params = jax.tree.map(lambda x, i=seed: x[i], result.state.params)
            save_hf_model(out, model, seed_params, pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id)
    if result.records:
        plot_metrics(result.records, PLOTTED[objective], os.path.join(run_dir, "curve.png"), f"{name} ({args.model})")
    print(f"final {', '.join(f'{k} {final[k]:.4g}' for k in PLOTTED[objective] if k in final)}; "
          f"{summary['tokens_per_second']:,.0f} tokens/s, compile {result.compile_seconds:.1f} s\nwrote {run_dir}")
    return summary
