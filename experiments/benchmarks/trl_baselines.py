"""Training throughput of TRL's DPOTrainer and RewardTrainer on CPU: the PyTorch baselines for our JAX LM trainer.

    python -m experiments.benchmarks.trl_baselines --out runs/bench/trl_dpo.json
    python -m experiments.benchmarks.trl_baselines --trainer reward --out runs/bench/trl_reward.json

What is measured: wall-clock seconds of one optimiser step, from the
Trainer's ``on_step_begin`` to its ``on_step_end`` callback. For DPO that covers the
policy forward+backward and the reference model's no-grad forward on
``batch_pairs`` chosen and ``batch_pairs`` rejected sequences, the sigmoid DPO
loss; for the reward model (``LlamaForSequenceClassification`` with one label: the
same transformer, a bias-free scalar head read at the last non-pad token) its
forward+backward on the same sequences and the Bradley-Terry loss. Then, for both,
grad-norm clipping (HF default 1.0), the AdamW step (HF default
``adamw_torch_fused``), the LR schedule and ``zero_grad``. Batch collation is
excluded because the Trainer prefetches batches before ``on_step_begin``. The
first ``warmup`` steps are dropped. tokens/s counts every token that the model
sees (prompt and completion, chosen and rejected):
``batch_pairs * 2 * (prompt_len + completion_len) / step_seconds``.

The settings keep the comparison like for like with our JAX trainer. The model
is a random fp32 Llama with untied embeddings and TRL's default
attention (sdpa). DPO's reference model is a separate copy whose forward runs on
every step (``precompute_ref_log_probs=False``), with one loss
(``["sigmoid"]``, beta 0.1). No gradient accumulation and no dropout.
Gradient checkpointing and bf16 are off: DPOConfig and RewardConfig turn both on by default,
and they would make this measure something else. The data is random.
Each prompt is exactly ``prompt_len`` tokens, and each chosen or rejected
completion is exactly ``completion_len`` tokens: the last of these is the EOS
token that TRL appends itself, so no padding occurs.
TRL 1.16 only takes text, so a WordLevel tokenizer maps each word to one token
and adds no BOS. The sequence shapes that reach the models are recorded in the
result, to show that this holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"  # ids 0, 1, 2; random tokens use ids 3..vocab-1
LLAMA_KEYS = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
              "rms_norm_eps", "rope_parameters", "tie_word_embeddings", "attention_bias", "mlp_bias",
              "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id"}


def word_tokenizer(vocab: int):
    """A Hugging Face tokenizer that maps each word ``t<i>`` to token ``i`` (ids 0-2: pad, EOS, unk), adding no BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {PAD: 0, EOS: 1, UNK: 2} | {f"t{i}": i for i in range(3, vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # one word = one token, no post-processor (no BOS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def _dataset(rows: int, prompt_len: int, completion_len: int, vocab: int, seed: int):
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    text = lambda n: " ".join(f"t{i}" for i in rng.integers(3, vocab, n))  # noqa: E731
    # The completion ends with EOS itself so that TRL's add_eos leaves it alone: completion_len tokens in all.
    completion = lambda: f" {text(completion_len - 1)} {EOS}"  # noqa: E731
    return Dataset.from_list(
        [{"prompt": text(prompt_len), "chosen": completion(), "rejected": completion()} for _ in range(rows)]
    )


TRAINERS = ("dpo", "reward")


def torch_matmul_rate(shape) -> float:
    """FLOP/s of one float32 ``[m, k] @ [k, n]`` matmul in PyTorch at its current thread count
    (``dpo_throughput.matmul_rate``'s PyTorch twin, timed the same way)."""
    import torch

    from experiments.benchmarks.dpo_throughput import call_rate

    m, k, n = shape
    a, b = torch.ones(m, k), torch.ones(k, n)
    return call_rate(lambda: torch.matmul(a, b), 2 * m * k * n)


def trl_throughput(trainer="dpo", steps=20, warmup=3, batch_pairs=16, prompt_len=32, completion_len=32, hidden=256,
                   layers=4, heads=4, kv_heads=4, intermediate=1024, vocab=512, seed=0, threads=None,
                   gradient_checkpointing=False, matmul_shape=None) -> dict:
    """``trainer``: ``"dpo"`` (``trl.DPOTrainer``) or ``"reward"`` (``trl.RewardTrainer``). ``matmul_shape``
    ``(m, k, n)``: also time one float32 ``[m, k] @ [k, n]`` matmul in PyTorch (``matmul_flops_per_second``)."""
    import torch
    import transformers
    import trl
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, TrainerCallback

    if trainer not in TRAINERS:
        raise ValueError(f"trainer: expected one of {TRAINERS}, got {trainer!r}")

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))  # default: every core we may run on
    seq_len = prompt_len + completion_len
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=seq_len,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=1, num_labels=1,
    )
    torch.manual_seed(seed)
    # attn_implementation left at the transformers default
    model = (LlamaForCausalLM if trainer == "dpo" else LlamaForSequenceClassification)(config).float()
    models = {"policy": model} if trainer == "reward" else {"policy": model, "reference": copy.deepcopy(model).eval()}

    # What each model is fed: (rows, tokens per row, [completion tokens per row (DPO's labels),] attended tokens
    # per row). One tuple per model, with tokens == attended, shows every step saw the intended unpadded shapes.
    seen = {name: set() for name in models}

    def record(name):
        def hook(_m, _a, kw):
            shape = tuple(kw["input_ids"].shape)
            if "labels" in kw and kw["labels"] is not None:  # DPO marks the completion by its labels
                shape += tuple(sorted(set((kw["labels"] != -100).sum(1).tolist())))
            if kw.get("attention_mask") is not None:  # attended tokens per row
                shape += tuple(sorted(set(kw["attention_mask"].sum(1).tolist())))
            seen[name].add(shape)
        return hook

    for name, m in models.items():
        m.register_forward_pre_hook(record(name), with_kwargs=True)

    times = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            times[state.global_step] = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            times[state.global_step - 1].append(time.perf_counter())

    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"trl_{trainer}_"), per_device_train_batch_size=batch_pairs,
        learning_rate=1e-4, max_steps=warmup + steps, logging_steps=10**9, report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, bf16=False, fp16=False,
        gradient_accumulation_steps=1, max_length=None, disable_tqdm=True, seed=seed,
        activation_checkpointing=gradient_checkpointing,  # transformers 5 name; TRL's default is True
    )
    data = dict(processing_class=word_tokenizer(vocab), callbacks=[StepTimer()],
                train_dataset=_dataset(batch_pairs * (warmup + steps), prompt_len, completion_len, vocab, seed))
    if trainer == "dpo":
        args = trl.DPOConfig(beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=False, **common)
        trl_trainer = trl.DPOTrainer(model=model, ref_model=models["reference"], args=args, **data)
    else:
        args = trl.RewardConfig(**common)
        trl_trainer = trl.RewardTrainer(model=model, args=args, **data)
    trl_trainer.train()

    step_s = [end - begin for step, (begin, end) in sorted(times.items()) if step >= warmup]
    matmul = {} if matmul_shape is None else {"matmul_shape": list(matmul_shape),
                                               "matmul_flops_per_second": torch_matmul_rate(matmul_shape)}
    median, mean = statistics.median(step_s), statistics.fmean(step_s)
    tokens = batch_pairs * 2 * seq_len
    return {
        "benchmark": f"trl.{type(trl_trainer).__name__}", "steps": steps, "warmup": warmup, "batch_pairs": batch_pairs,
        "prompt_len": prompt_len, "completion_len": completion_len, "tokens_per_step": tokens,
        "model_inputs": {k: sorted(v) for k, v in seen.items()},
        "median_step_s": median, "mean_step_s": mean, "step_s": step_s,
        "tokens_per_s_median": tokens / median, "tokens_per_s_mean": tokens / mean,
        "num_threads": torch.get_num_threads(), "attn_implementation": model.config._attn_implementation,
        "gradient_checkpointing": model.is_activation_checkpointing, "optim": getattr(args.optim, "value", args.optim),
        "max_grad_norm": args.max_grad_norm, "dtype": str(next(model.parameters()).dtype),
        "llama_config": {k: v for k, v in config.to_dict().items() if k in LLAMA_KEYS},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "python": platform.python_version()},
    } | matmul


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=TRAINERS, default="dpo")
    for name, default in [("steps", 20), ("warmup", 3), ("batch-pairs", 16), ("prompt-len", 32),
                          ("completion-len", 32), ("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 4),
                          ("intermediate", 1024), ("vocab", 512), ("seed", 0), ("threads", None)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="TRL's default; off here")
    parser.add_argument("--out", help="write the result as JSON to this file")
    kwargs = vars(parser.parse_args())
    out = kwargs.pop("out")
    text = json.dumps(trl_throughput(**kwargs), indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
