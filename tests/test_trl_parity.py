"""rljax's SFT, DPO and reward-model objectives against TRL 1.16's ``SFTTrainer``, ``DPOTrainer`` and
``RewardTrainer`` on one batch.

Both sides get the same Llama weights (random ``LlamaForCausalLM`` / ``LlamaForSequenceClassification`` models
saved by transformers, read by ``rljax.lm.hf_import``) and the same collated batch (TRL's own, with right
padding: prompts and completions of different lengths). For SFT, for every DPO loss type that both implement
as the papers define it, and for the Bradley-Terry reward model, the loss and the gradients of every parameter
agree to float32 rounding, and so do TRL's reward metrics. IPO is where they part: the IPO paper's h is the log-ratio of whole
sequences, which rljax sums, while TRL averages each sequence's log-ratio over its tokens; a test pins that
difference exactly.
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
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected")
REWARD_METRICS = ("accuracy", "margin")  # the same names in TRL's RewardTrainer


def llama_config(**fields):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=1, **fields)


def perturbed(model, seed):
    """``model`` plus noise on every weight: the policy differs from its reference (where every log-ratio is 0
    and the DPO losses could not tell apart), and a fresh score layer is not left at its small initial scale."""
    import torch

    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("trl_parity")


@pytest.fixture(scope="module")
def rows():
    """Preference rows: prompts of 2-6 words, completions of 1-8 words plus EOS, one token per word."""
    rng = np.random.default_rng(0)
    words = lambda n: " ".join(f"t{i}" for i in rng.integers(3, VOCAB, n))  # noqa: E731
    return [{"prompt": words(rng.integers(2, 7)), "chosen": f" {words(rng.integers(1, 9))} {EOS}",
             "rejected": f" {words(rng.integers(1, 9))} {EOS}"} for _ in range(PAIRS)]


@pytest.fixture(scope="module")
def dpo_models(root):
    """The DPO policy and its reference, as torch models and as imported rljax params."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    reference = LlamaForCausalLM(llama_config()).float().eval()
    policy = perturbed(reference, seed=1)
    policy.save_pretrained(root / "policy")
    reference.save_pretrained(root / "reference")
    config, params = hf_import.load_hf_model(root / "policy")
    return dict(torch=policy, torch_reference=reference, config=config, params=params, dir=root / "policy",
                ref_params=hf_import.load_hf_model(root / "reference")[1])


@pytest.fixture(scope="module")
def reward_model(root):
    """A scalar reward model (``LlamaForSequenceClassification``, one label), in torch and imported by rljax."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(2)
    model = perturbed(LlamaForSequenceClassification(llama_config(num_labels=1)).float(), seed=3)
    model.save_pretrained(root / "reward")
    config, params = hf_import.load_hf_model(root / "reward")
    return dict(torch=model, config=config, params=params, dir=root / "reward")


def trl_step(trainer, model, checkpoint_dir, config, root):
    """One batch of ``trainer`` through ``model``: (the batch as rljax's arrays, loss, TRL's metrics, the
    gradients in rljax's parameter layout)."""
    from safetensors.torch import save_file

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
    shutil.copy(checkpoint_dir / "config.json", grads_dir)
    grads = hf_import.load_hf_params(grads_dir, config)
    assert (batch["attention_mask"] == 0).any(), "the batch should hold padding"
    return as_rljax_batch(batch), float(loss), metrics, grads


def as_rljax_batch(batch):
    """TRL's collated batch in rljax's fields: an SFT batch marks its completion by its labels; a pair batch
    stacks ``[chosen; rejected]`` rows, which rljax keeps apart."""
    if "labels" in batch:
        return {"input_ids": jnp.asarray(batch["input_ids"].numpy()),
                "attention_mask": jnp.asarray(batch["attention_mask"].numpy()),
                "completion_mask": jnp.asarray((batch["labels"] != -100).numpy(), jnp.int32)}
    pairs = {"margin": jnp.asarray(batch["margin"].numpy())} if "margin" in batch else {}
    for side, half in (("chosen", slice(0, PAIRS)), ("rejected", slice(PAIRS, None))):
        for field in ("input_ids", "attention_mask", "completion_mask"):
            if field in batch:
                pairs[f"{side}_{field}"] = jnp.asarray(batch[field][half].numpy())
    return pairs


def trl_args(root, **fields):
    return dict(output_dir=str(root / "out"), per_device_train_batch_size=PAIRS, use_cpu=True, report_to=[],
                max_length=None, bf16=False, fp16=False, activation_checkpointing=False, dataloader_num_workers=0,
                disable_tqdm=True, **fields)


def trl_dpo(root, rows, models, loss_type, loss_weights=None, label_smoothing=0.0):
    import trl
    from datasets import Dataset

    model = copy.deepcopy(models["torch"])
    args = trl.DPOConfig(**trl_args(root, beta=BETA, loss_type=list(loss_type), loss_weights=loss_weights,
                                    label_smoothing=label_smoothing, precompute_ref_log_probs=False))
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(models["torch_reference"]), args=args,
                             processing_class=word_tokenizer(VOCAB), train_dataset=Dataset.from_list(rows))
    return trl_step(trainer, model, models["dir"], models["config"], root)


def rljax_loss_and_gradients(models, batch, objective, loss_type=("sigmoid",), loss_weights=None,
                             label_smoothing=0.0, sft_normalization="sum", center_rewards_coefficient=0.0,
                             prefix_sharing=False):
    config = lm_train.LMTrainConfig(model=models["config"], objective=objective, loss_types=tuple(loss_type),
                                    sft_normalization=sft_normalization, batch_size=PAIRS, prefix_sharing=prefix_sharing)
    hp = lm_train.LMHParams(beta=BETA, label_smoothing=label_smoothing, loss_weights=loss_weights,
                            center_rewards_coefficient=center_rewards_coefficient)
    shared_prefix = lm_train.shared_prefix_length(jax.tree.map(np.asarray, batch)) if prefix_sharing else 0
    loss_fn = lm_train.make_loss(config, shared_prefix=shared_prefix)
    # the minibatch's denominator: pairs, or the completion tokens that are predicted (SFT's token mean)
    norm = batch["completion_mask"][:, 1:].sum().astype(jnp.float32) if objective == "sft" else PAIRS
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(models["params"], models.get("ref_params"), batch,
                                                                   hp, norm)
    return float(loss), aux, grads


def assert_gradients_equal(grads, trl_grads, what):
    assert jax.tree.structure(grads) == jax.tree.structure(trl_grads)
    largest = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(trl_grads))
    worst = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(trl_grads)))
    print(f"{what}: max |gradient difference| {worst:.2g} ({worst / largest:.2g} of the largest entry)")
    for (path, ours), theirs in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(trl_grads)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * largest, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("loss_type, loss_weights, label_smoothing, sft_normalization", [
    (["sigmoid"], None, 0.0, "sum"),
    (["robust"], None, 0.1, "sum"),
    (["hinge"], None, 0.0, "sum"),
    # TRL's RPO recipe: its sft term is the token-mean NLL of the chosen completions, rljax's "mean".
    (["sigmoid", "sft"], [1.0, 0.5], 0.0, "mean"),
])
def test_dpo_loss_metrics_and_gradients_equal_trls(root, rows, dpo_models, loss_type, loss_weights, label_smoothing,
                                                   sft_normalization):
    pairs, trl_loss, trl_metrics, trl_grads = trl_dpo(root, rows, dpo_models, loss_type, loss_weights,
                                                      label_smoothing)
    loss, aux, grads = rljax_loss_and_gradients(dpo_models, pairs, "dpo", loss_type, loss_weights, label_smoothing,
                                                sft_normalization)
    print(f"{'+'.join(loss_type)}: loss {loss:.7g} vs TRL's {trl_loss:.7g}")
    np.testing.assert_allclose(loss, trl_loss, rtol=1e-5)
    for name in DPO_METRICS:
        np.testing.assert_allclose(float(aux[name]), trl_metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert_gradients_equal(grads, trl_grads, "+".join(loss_type))


def test_prefix_sharing_gives_trls_dpo_loss_and_gradients(root, rows, dpo_models):
    # Each pair's prompt run once for both completions (Wang and Hegde 2024), which TRL does not do: the same
    # objective as TRL's concatenated forward.
    pairs, trl_loss, _, trl_grads = trl_dpo(root, rows, dpo_models, ["sigmoid"])
    assert lm_train.shared_prefix_length(jax.tree.map(np.asarray, pairs)) >= 2  # the shortest prompt
    loss, _, grads = rljax_loss_and_gradients(dpo_models, pairs, "dpo", prefix_sharing=True)
    print(f"sigmoid, prefix sharing: loss {loss:.7g} vs TRL's {trl_loss:.7g}")
    np.testing.assert_allclose(loss, trl_loss, rtol=1e-5)
    assert_gradients_equal(grads, trl_grads, "sigmoid, prefix sharing")


def test_ipo_differs_from_trls_by_its_per_token_average(root, rows, dpo_models):
    pairs, trl_loss, _, _ = trl_dpo(root, rows, dpo_models, ["ipo"])
    loss, _, _ = rljax_loss_and_gradients(dpo_models, pairs, "dpo", ["ipo"])

    def token_mean_logratios(side):
        ids, attention, completion = (pairs[f"{side}_{f}"] for f in ("input_ids", "attention_mask", "completion_mask"))
        logps, lengths = lm_train.sequence_logps(dpo_models["params"], dpo_models["config"], ids, attention,
                                                 completion)
        ref_logps, _ = lm_train.sequence_logps(dpo_models["ref_params"], dpo_models["config"], ids, attention,
                                               completion)
        return (logps - ref_logps) / lengths

    averaged = preference.ipo(token_mean_logratios("chosen") - token_mean_logratios("rejected"), BETA).mean()
    print(f"ipo: TRL's loss {trl_loss:.7g}, per-token variant {float(averaged):.7g}, rljax's (summed) {loss:.7g}")
    np.testing.assert_allclose(float(averaged), trl_loss, rtol=1e-5)  # TRL's IPO is the per-token variant
    assert abs(loss - trl_loss) > 100 * 1e-5 * trl_loss  # rljax's, on summed log-ratios, is far outside that


@pytest.mark.parametrize("center_rewards_coefficient, margins", [(None, False), (0.5, False), (None, True)])
def test_reward_model_loss_metrics_and_gradients_equal_trls(root, rows, reward_model, center_rewards_coefficient,
                                                            margins):
    import trl
    from datasets import Dataset

    if margins:  # Llama 2's preference strength, TRL's "margin" column
        rows = [row | {"margin": float(m)} for row, m in zip(rows, np.linspace(-1.0, 2.0, len(rows)))]
    model = copy.deepcopy(reward_model["torch"])
    args = trl.RewardConfig(**trl_args(root, center_rewards_coefficient=center_rewards_coefficient))
    trainer = trl.RewardTrainer(model=model, args=args, processing_class=word_tokenizer(VOCAB),
                                train_dataset=Dataset.from_list(rows))
    pairs, trl_loss, trl_metrics, trl_grads = trl_step(trainer, model, reward_model["dir"], reward_model["config"],
                                                       root)
    loss, aux, grads = rljax_loss_and_gradients(reward_model, pairs, "reward",
                                                center_rewards_coefficient=center_rewards_coefficient or 0.0)
    assert ("margin" in pairs) == margins
    what = f"reward model (centring {center_rewards_coefficient}, margins {margins})"
    print(f"{what}: loss {loss:.7g} vs TRL's {trl_loss:.7g}")
    np.testing.assert_allclose(loss, trl_loss, rtol=1e-5)
    for name in REWARD_METRICS:
        np.testing.assert_allclose(float(aux[name]), trl_metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # transformers' score layer has no bias; rljax's reward head has one, imported as 0. Without centring its
    # gradient is 0 (a shift of every reward leaves each chosen - rejected difference alone); with it, TRL has
    # no such parameter to compare.
    bias_grad = grads["reward_head"]["bias"]
    if center_rewards_coefficient is None:
        np.testing.assert_allclose(bias_grad, 0.0, atol=1e-7)
    else:
        assert np.abs(bias_grad).max() > 1e-3
    grads["reward_head"]["bias"] = trl_grads["reward_head"]["bias"]
    assert_gradients_equal(grads, trl_grads, what)


def test_sft_loss_and_gradients_equal_trls(root, rows, dpo_models):
    # TRL's SFTTrainer on prompt-completion rows: the token-mean NLL of the completions (prompt tokens are
    # labelled -100), rljax's objective="sft".
    import trl
    from datasets import Dataset

    model = copy.deepcopy(dpo_models["torch"])
    sft_rows = [{"prompt": row["prompt"], "completion": row["chosen"]} for row in rows]
    trainer = trl.SFTTrainer(model=model, args=trl.SFTConfig(**trl_args(root)), processing_class=word_tokenizer(VOCAB),
                             train_dataset=Dataset.from_list(sft_rows))
    batch, trl_loss, trl_metrics, trl_grads = trl_step(trainer, model, dpo_models["dir"], dpo_models["config"], root)
    loss, aux, grads = rljax_loss_and_gradients(dpo_models, batch, "sft")
    print(f"sft: loss {loss:.7g} vs TRL's {trl_loss:.7g}")
    np.testing.assert_allclose(loss, trl_loss, rtol=1e-5)
    assert trl_metrics["num_tokens"] == int(batch["attention_mask"].sum())  # TRL's batch is the one rljax saw
    assert_gradients_equal(grads, trl_grads, "sft")
