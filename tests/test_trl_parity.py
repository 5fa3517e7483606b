"""rljax's DPO objective against TRL 1.16's ``DPOTrainer`` on one batch.

Both sides get the same Llama weights (a random ``LlamaForCausalLM`` saved by transformers, read by
``rljax.lm.hf_import``), a policy that differs from the reference, and the same collated batch (TRL's own,
with right padding: completions of different lengths). For every loss type that both implement as the
papers define it, the loss, TRL's metrics and the policy's gradients agree to float32 rounding. IPO is
where they part: the IPO paper's h is the log-ratio of whole sequences, which rljax sums, while TRL
averages each sequence's log-ratio over its tokens; the last test pins that difference exactly.
"""

import copy
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks.trl_baselines import EOS, word_tokenizer
from rljax.lm import hf_import
from rljax.lm import train as lm_train
from rljax.losses import preference

# torch, transformers, datasets and TRL are imported inside the functions, so that collecting the default
# tier, which deselects these tests, does not import them.
pytestmark = pytest.mark.integration

VOCAB, PAIRS, BETA = 64, 4, 0.2  # beta off TRL's default 0.1, so a side that ignored it would differ
TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Policy and reference in both libraries, and the preference rows (prompts of 2-6 words, completions of
    1-8 words plus EOS, one token per word)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("trl_parity")
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=1)
    torch.manual_seed(0)
    reference = LlamaForCausalLM(config).float().eval()
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # at the reference itself every log-ratio is 0 and the losses cannot tell apart
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy.save_pretrained(root / "policy")
    reference.save_pretrained(root / "reference")
    model_config, params = hf_import.load_hf_model(root / "policy")
    _, ref_params = hf_import.load_hf_model(root / "reference")
    rng = np.random.default_rng(0)
    words = lambda n: " ".join(f"t{i}" for i in rng.integers(3, VOCAB, n))  # noqa: E731
    rows = [{"prompt": words(rng.integers(2, 7)), "chosen": f" {words(rng.integers(1, 9))} {EOS}",
             "rejected": f" {words(rng.integers(1, 9))} {EOS}"} for _ in range(PAIRS)]
    return dict(root=root, policy=policy, reference=reference, rows=rows, model_config=model_config,
                params=params, ref_params=ref_params)


def trl_loss_and_gradients(setup, loss_type, loss_weights=None, label_smoothing=0.0):
    """One batch through a fresh ``DPOTrainer``: (TRL's batch as rljax's pair arrays, loss, metrics, the policy's
    gradients in rljax's parameter layout)."""
    import trl
    from datasets import Dataset
    from safetensors.torch import save_file

    root, model = setup["root"], copy.deepcopy(setup["policy"])
    args = trl.DPOConfig(output_dir=str(root / "out"), beta=BETA, loss_type=list(loss_type), loss_weights=loss_weights,
                         label_smoothing=label_smoothing, per_device_train_batch_size=PAIRS, use_cpu=True,
                         report_to=[], max_length=None, bf16=False, fp16=False, activation_checkpointing=False,
                         precompute_ref_log_probs=False, dataloader_num_workers=0, disable_tqdm=True)
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(setup["reference"]), args=args,
                             processing_class=word_tokenizer(VOCAB), train_dataset=Dataset.from_list(setup["rows"]))
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    # hf_import only transposes and reshapes tensors, so a "checkpoint" of the gradients imports as the
    # gradients in rljax's layout.
    grads_dir = root / "grads"
    grads_dir.mkdir(exist_ok=True)
    save_file({name: p.grad.contiguous() for name, p in model.named_parameters()}, grads_dir / "model.safetensors")
    shutil.copy(root / "policy" / "config.json", grads_dir)
    grads = hf_import.load_hf_params(grads_dir, setup["model_config"])
    pairs = {}
    for side, rows in (("chosen", slice(0, PAIRS)), ("rejected", slice(PAIRS, None))):  # TRL: [chosen; rejected]
        for field in ("input_ids", "attention_mask", "completion_mask"):
            pairs[f"{side}_{field}"] = jnp.asarray(batch[field][rows].numpy())
    return pairs, float(loss), metrics, grads


def rljax_loss_and_gradients(setup, pairs, loss_type, loss_weights=None, label_smoothing=0.0,
                             sft_normalization="sum"):
    config = lm_train.LMTrainConfig(model=setup["model_config"], objective="dpo", loss_types=tuple(loss_type),
                                    sft_normalization=sft_normalization, batch_size=PAIRS)
    hp = lm_train.LMHParams(beta=BETA, label_smoothing=label_smoothing, loss_weights=loss_weights)
    loss_fn = lm_train.make_loss(config)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(setup["params"], setup["ref_params"], pairs, hp,
                                                                   PAIRS)
    return float(loss), aux, grads


@pytest.mark.parametrize("loss_type, loss_weights, label_smoothing, sft_normalization", [
    (["sigmoid"], None, 0.0, "sum"),
    (["robust"], None, 0.1, "sum"),
    (["hinge"], None, 0.0, "sum"),
    # TRL's RPO recipe: its sft term is the token-mean NLL of the chosen completions, rljax's "mean".
    (["sigmoid", "sft"], [1.0, 0.5], 0.0, "mean"),
])
def test_loss_metrics_and_gradients_equal_trls(setup, loss_type, loss_weights, label_smoothing, sft_normalization):
    pairs, trl_loss, trl_metrics, trl_grads = trl_loss_and_gradients(setup, loss_type, loss_weights, label_smoothing)
    assert (np.asarray(pairs["chosen_attention_mask"]) == 0).any(), "the batch should hold padding"
    loss, aux, grads = rljax_loss_and_gradients(setup, pairs, loss_type, loss_weights, label_smoothing,
                                                sft_normalization)
    np.testing.assert_allclose(loss, trl_loss, rtol=1e-5)
    for name in TRL_METRICS:
        np.testing.assert_allclose(float(aux[name]), trl_metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    largest = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(trl_grads))
    assert jax.tree.structure(grads) == jax.tree.structure(trl_grads)
    for (path, ours), theirs in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(trl_grads)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * largest, err_msg=jax.tree_util.keystr(path))


def test_ipo_differs_from_trls_by_its_per_token_average(setup):
    pairs, trl_loss, _, _ = trl_loss_and_gradients(setup, ["ipo"])
    loss, _, _ = rljax_loss_and_gradients(setup, pairs, ["ipo"])

    def token_mean_logratios(side):
        ids, attention, completion = (pairs[f"{side}_{f}"] for f in ("input_ids", "attention_mask", "completion_mask"))
        logps, lengths = lm_train.sequence_logps(setup["params"], setup["model_config"], ids, attention, completion)
        ref_logps, _ = lm_train.sequence_logps(setup["ref_params"], setup["model_config"], ids, attention, completion)
        return (logps - ref_logps) / lengths

    averaged = preference.ipo(token_mean_logratios("chosen") - token_mean_logratios("rejected"), BETA).mean()
    np.testing.assert_allclose(float(averaged), trl_loss, rtol=1e-5)  # TRL's IPO is the per-token variant
    assert abs(loss - trl_loss) > 0.1 * trl_loss  # and rljax's, on summed log-ratios, is not
