"""`python -m experiments sft|reward-model|dpo` on JSONL files, end to end at a tiny size."""

import json

import jax
import numpy as np
import pytest

from experiments.__main__ import main as cli
from rljax.core.config import ConfigError
from rljax.lm.data import LMDataError
from rljax.lm.hf_import import load_hf_model

WORDS = ["red", "blue", "green", "cat", "dog", "sun"]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("jsonl")
    sft = [{"prompt": f"say {w}:", "completion": f" {w}!"} for w in WORDS * 3]
    prefs = [{"prompt": f"say {w}:", "chosen": f" {w}!", "rejected": f" {WORDS[(i + 1) % 6]}?"}
             for i, w in enumerate(WORDS * 3)]
    return write_jsonl(d / "sft.jsonl", sft), write_jsonl(d / "prefs.jsonl", prefs)


TINY = ["--batch-size", "6", "--no-progress", "--max-length", "24"]


@pytest.mark.integration
def test_sft_then_dpo_from_its_checkpoint(files, tmp_path):
    sft_out = tmp_path / "sft"
    cli(["sft", "--data", files[0], "--epochs", "3", "--lr", "3e-3", "--save-hf", "--out", str(sft_out), *TINY])
    result = json.loads((sft_out / "result.json").read_text())
    assert result["finished"] and result["updates"] == 9 and (sft_out / "curve.png").exists()
    records = [json.loads(line) for line in (sft_out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]

    dpo_out = tmp_path / "dpo"
    cli(["dpo", "--data", files[1], "--init", str(sft_out), "--loss-type", "sigmoid", "sft",
         "--loss-weights", "1", "0.01", "--lr", "1e-3", "--epochs", "2", "--prefix-sharing", "--logits-chunk", "4",
         "--save-hf", "--out", str(dpo_out), *TINY])
    records = [json.loads(line) for line in (dpo_out / "metrics.jsonl").read_text().splitlines()]
    first = records[0]
    # started from the SFT params (not a random init): the reference is the SFT model, so the first
    # step's rewards are 0 (to rounding), and the chosen completions (6 bytes + EOS) have a log-prob far
    # above a random init's 7 * log(1/259) = -39
    assert abs(first["rewards/chosen"]) < 1e-5 and first["logps/chosen"] > -20.0
    assert {"loss/sigmoid", "loss/sft", "rewards/margins", "rewards/accuracies", "grad_norm"} <= set(first)
    config = json.loads((dpo_out / "config.json").read_text())
    assert config["config"]["loss_types"] == ["sigmoid", "sft"] and config["hparams"]["loss_weights"] == [1.0, 0.01]
    assert config["config"]["prefix_sharing"]  # "say <word>:" runs once per pair
    assert config["config"]["model"]["logits_chunk"] == 4
    # --save-hf: each run's final model as a Hugging Face checkpoint; DPO moved the SFT model's weights
    sft_config, sft_params = load_hf_model(sft_out / "hf_model")
    dpo_config, dpo_params = load_hf_model(dpo_out / "hf_model")
    assert sft_config.vocab_size == dpo_config.vocab_size == 259 and dpo_config.heads == ("lm",)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), sft_params, dpo_params)
    assert 0 < max(jax.tree.leaves(moved))


@pytest.mark.integration
def test_reward_model_cli(files, tmp_path):
    out = tmp_path / "rm"
    rows = [json.loads(line) | {"margin": 0.5} for line in open(files[1])]  # Llama 2's margins, TRL's column
    data = write_jsonl(tmp_path / "margins.jsonl", rows)
    cli(["reward-model", "--data", data, "--margin", "--center-rewards-coefficient", "0.01", "--epochs", "2",
         "--lr", "1e-3", "--prefix-sharing", "--out", str(out), *TINY])
    final = json.loads((out / "result.json").read_text())["final"]
    assert {"loss", "accuracy", "margin"} <= set(final) and np.isfinite(final["loss"]).all()
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["prefix_sharing"] and config["hparams"]["center_rewards_coefficient"] == 0.01


def test_malformed_jsonl_row_names_the_line(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(LMDataError, match=r"bad.jsonl.*line 2.*rejected"):
        cli(["dpo", "--data", str(bad), "--out", str(tmp_path / "x"), *TINY])
    assert not (tmp_path / "x").exists()  # nothing written for a run that could not start


def test_init_from_a_run_of_another_model_is_refused(files, tmp_path):
    cli(["sft", "--data", files[0], "--epochs", "1", "--out", str(tmp_path / "sft"), *TINY])
    with pytest.raises(ValueError, match="its params do not fit --model"):
        cli(["dpo", "--data", files[1], "--model", "gpt2-tiny", "--init", str(tmp_path / "sft"),
             "--out", str(tmp_path / "dpo"), *TINY])


@pytest.mark.parametrize("command, error, match", [
    (["dpo", "PREFS", "--dtype", "bfloat16", "--attention", "cudnn"], ConfigError,
     r"LMConfig.attention: 'cudnn' runs on NVIDIA GPUs only, .* backend is 'cpu'"),
    (["sft", "SFT", "--attention", "cudnn"], ConfigError,
     r"LMConfig.attention: 'cudnn' computes in 'bfloat16' or 'float16', got dtype"),
    (["reward-model", "PREFS", "--margin"], LMDataError, r"prefs.jsonl, line 1: missing key 'margin'"),
    (["dpo", "PREFS", "--loss-type", "robust", "--label-smoothing", "0.5"], ConfigError,
     r"LMHParams.label_smoothing: expected a number in \[0, 1/2\), got 0.5"),
    (["dpo", "PREFS", "--beta", "0"], ConfigError, r"LMHParams.beta: expected a positive number, got 0.0"),
    (["reward-model", "PREFS", "--center-rewards-coefficient", "-0.1"], ConfigError,
     r"LMHParams.center_rewards_coefficient: expected a number >= 0, got -0.1"),
    (["reward-model", "PREFS", "--center-rewards-coefficient", "0.1", "--save-hf"], ConfigError,
     r"--save-hf with --center-rewards-coefficient > 0: centring trains the reward head's bias"),
])
def test_bad_settings_are_refused_before_anything_is_written(files, tmp_path, command, error, match):
    name, data, *rest = command
    with pytest.raises(error, match=match):
        cli([name, "--data", files[0] if data == "SFT" else files[1], *rest, "--out", str(tmp_path / "x"), *TINY])
    assert not (tmp_path / "x").exists()
