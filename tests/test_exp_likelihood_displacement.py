"""The likelihood-displacement experiment (Razin et al., 2025): pair construction, filters, a smoke run, the full claim."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import likelihood_displacement as ld
from experiments.__main__ import main as cli
from rljax.core.config import ConfigError


def _completion(ids, mask):
    return [int(t) for t, m in zip(ids, mask) if m][:-1]  # without the eos


def test_pairs_are_built_as_their_kind_says():
    setup = ld.Setup(**ld.QUICK | {"num_pairs": 60})
    sft, pairs, kinds, edits, floor = ld.make_task(setup, 0)
    S = setup.synonyms
    assert len(sft) == setup.num_prompts * setup.sft_samples_per_prompt and len(pairs) == setup.num_pairs
    assert 0 < floor < math.log(S)
    for n in range(len(pairs)):
        prompt = slice(0, setup.prompt_length)
        assert pairs.chosen_input_ids[n, prompt].tolist() == pairs.rejected_input_ids[n, prompt].tolist()
        yp = _completion(pairs.chosen_input_ids[n], pairs.chosen_completion_mask[n])
        yn = _completion(pairs.rejected_input_ids[n], pairs.rejected_completion_mask[n])
        assert yp != yn
        kind, k = ld.PAIR_KINDS[kinds[n]], edits[n]
        if kind in ("synonym", "wrong_class"):
            changed = [q for q in range(len(yp)) if yp[q] != yn[q]]
            assert len(yp) == len(yn) and len(changed) == k
            same_class = [yp[q] // S == yn[q] // S for q in changed]
            assert all(same_class) if kind == "synonym" else not any(same_class)
        elif kind == "truncated":
            assert yn == yp[: len(yp) - k]
        elif kind == "extended":
            assert yn[: len(yp)] == yp and len(yn) == len(yp) + k
    # The same seed gives the same task.
    again = ld.make_task(setup, 0)[1]
    np.testing.assert_array_equal(again.rejected_input_ids, pairs.rejected_input_ids)


def test_filters_drop_the_highest_scores_and_tertiles_split_in_thirds():
    setup = ld.Setup(**ld.QUICK)
    ches = np.arange(setup.num_pairs, dtype=float)[::-1]  # pair 0 has the highest score
    kept = ld.kept_indices(setup, "ches", ches, -ches, np.random.default_rng(0))
    assert len(kept) == setup.num_kept == 15  # the top half removed
    np.testing.assert_array_equal(kept, np.arange(15, 30))
    np.testing.assert_array_equal(ld.kept_indices(setup, "ln_ches", ches, -ches, None), np.arange(15))
    assert ld.tertile_means(np.arange(6.0), np.array([1.0, 1, 2, 2, 3, 3])) == [1.0, 2.0, 3.0]


def test_largest_decrease_is_the_biggest_drop_from_an_earlier_point():
    # Delta log pi(y+) over 4 steps for 3 pairs (columns); the start (0) counts as an earlier point.
    delta = np.array([[1.0, -0.5, 0.2], [3.0, -0.2, 0.4], [0.5, -2.0, 0.6], [2.0, -1.0, 0.8]])
    np.testing.assert_allclose(ld.largest_decrease(delta), [2.5, 2.0, 0.0])
    np.testing.assert_allclose(ld.largest_decrease(np.stack([delta, -delta]))[1], [3.0, 1.0, 0.8])


def test_bad_setup_names_the_field():
    with pytest.raises(ConfigError, match="dpo_eval_every"):
        ld.Setup(dpo_steps=10, dpo_eval_every=3)
    with pytest.raises(ConfigError, match="sweep_learning_rates"):
        ld.Setup(sweep_learning_rates=(1e-3,))
    with pytest.raises(ConfigError, match="num_pairs"):
        ld.Setup(num_pairs=100)  # not divisible by 3
    with pytest.raises(ConfigError, match="dpo_optimizer"):
        ld.Setup(dpo_optimizer="lion")
    with pytest.raises(ConfigError, match="dpo_max_grad_norm"):
        ld.Setup(dpo_max_grad_norm=-1.0)


def test_dpo_runs_take_unclipped_rmsprop_steps_as_the_paper(monkeypatch):
    # The paper's DPO trainer (princeton-nlp/unintentional-unalignment, common_dpo/trainers/dpo_trainer.py, step())
    # applies torch RMSprop to the raw gradient, without clipping. These runs' gradient norms reach ~27 at the
    # SFT model, and a clipped gradient changes RMSprop's later steps (its first step is scale-invariant).
    from rljax.lm.train import make_optimizer

    configs = []
    real = ld.make_train
    monkeypatch.setattr(ld, "make_train", lambda config, data, **kw: configs.append(config) or real(config, data, **kw))
    setup = ld.Setup(**ld.QUICK)
    pairs = ld.make_task(setup, 0)[1]
    ld.make_single_pair_dpo(setup, pairs)
    ld.make_dataset_dpo(setup, pairs, setup.num_pairs)
    assert len(configs) == 2  # the single-pair and the pair-set runs
    grads = (jnp.array([30.0, -40.0]), jnp.array([3.0, 4.0]))  # global norms 50 and 5
    for config in configs:
        assert config.objective == "dpo" and config.optimizer == "rmsprop"
        tx = make_optimizer(config, 0.1)
        params = {"w": jnp.zeros(2)}
        state, v = tx.init(params), 0.0
        for g in grads:  # PyTorch's RMSprop (alpha 0.99, eps 1e-8 outside the sqrt, v from 0) on the raw gradient
            updates, state = tx.update({"w": g}, state, params)
            v = 0.99 * v + 0.01 * np.asarray(g) ** 2
            np.testing.assert_allclose(updates["w"], -0.1 * np.asarray(g) / (np.sqrt(v) + 1e-8), rtol=1e-5)


def test_optimizer_flag_defaults_to_rmsprop():
    import argparse

    parser = argparse.ArgumentParser()
    ld.add_arguments(parser)
    assert parser.parse_args([]).optimizer == "rmsprop" == ld.Setup().dpo_optimizer
    assert parser.parse_args(["--optimizer", "adamw"]).optimizer == "adamw"
    assert parser.parse_args(["--optimizer", "sgd"]).optimizer == "sgd"  # the first-order diagnostic
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "lion"])


def _finite(x):
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


@pytest.mark.integration
def test_quick_run_writes_finite_outputs(tmp_path):
    out = tmp_path / "run"
    cli(["likelihood-displacement", "--quick", "--no-progress", "--out", str(out)])
    for name in ("config.json", "result.json", "metrics.jsonl", "ches_scatter.png", "displacement.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert _finite(result)
    single = result["single_pair"]
    assert len(single["spearman_per_seed"]["ches"]) == result["seeds"] == 2
    assert -1 <= single["spearman_mean"]["ches"]["mean"] <= 1
    assert set(single["tertiles"]["ches"]) >= {"bottom", "middle", "top"}
    assert single["largest_decrease"]["mean"] >= 0 and 0 <= single["final_dpo_loss"]["median"]
    for name in ld.TERTILES:
        ci = result["subsets"][name]["own_pairs"]
        assert ci["ci95_low"] <= ci["mean"] <= ci["ci95_high"] and ci["n"] == 2
    for how in ld.FILTERS:
        ci = result["filtering"][how]["filtered_minus_full_on_kept"]
        assert ci["ci95_low"] <= ci["mean"] <= ci["ci95_high"] and ci["n"] == 2
        assert len(result["filtering"][how]["curve"]) == 2  # dpo_steps 4, evaluated every 2
    assert all(isinstance(v, bool) for v in result["claims"].values())
    config = json.loads((out / "config.json").read_text())["setup"]
    assert config["num_pairs"] == 30 and config["dpo_optimizer"] == "rmsprop"


@pytest.fixture(scope="module")
def full_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("likelihood_displacement") / "run"
    assert cli(["likelihood-displacement", "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_full_run_what_holds(full_result):
    # What the full run shows (RMSprop without clipping, 3 seeds, see the module docstring): DPO on the pair set displaces
    # (Delta log pi(y+) < 0 on all pairs, 95% CI below 0); DPO on the top CHES tertile alone lowers
    # log pi(y+), more than on the bottom tertile; single-pair DPO lowers it on the top CHES tertile and
    # raises it on the bottom one; CHES and the single-pair drop correlate positively when pooled and
    # significantly (p < 0.05) in every seed (Spearman 0.30, 0.22, 0.18: positive, below the claimed 0.5).
    claims = full_result["claims"]
    assert full_result["setup"]["dpo_optimizer"] == "rmsprop"
    assert claims["ches_spearman_significant_every_seed"]
    assert claims["displacement_in_full_run"]
    assert full_result["filtering"]["ches"]["full_on_all"]["ci95_high"] < 0
    assert claims["subset_top_ches_tertile_drops"]
    sub = full_result["subsets"]
    assert sub["top"]["own_pairs"]["mean"] < sub["bottom"]["own_pairs"]["mean"]
    assert claims["single_pair_top_ches_tertile_drops"] and claims["single_pair_bottom_ches_tertile_rises"]
    pooled = full_result["single_pair"]["spearman_pooled"]["ches"]
    assert pooled["rho"] > 0 and pooled["p_value"] < 1e-3


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="not reproduced at this scale (full run, RMSprop lr 1e-4 unclipped, 3 seeds, 100 single-pair DPO updates): "
    "Spearman(CHES, -Δlog π(y+)) = 0.23 (seeds 0.30, 0.22, 0.18; 95% CI 0.07..0.39) < 0.5, and DPO on the bottom "
    "CHES tertile alone lowers log π(y+) too (-1.64; top -3.86), so the bottom tertile does not rise; see result.json",
)
def test_full_run_claim(full_result):
    claims = full_result["claims"]
    assert claims["ches_spearman_above_0.5"]
    assert claims["subset_bottom_ches_tertile_rises"] and claims["subset_top_ches_tertile_drops"]
    assert claims["claim_holds"]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="filtering helps on average but not significantly (full run, RMSprop unclipped, 3 seeds): removing the top "
    "half by ln-CHES / CHES raises the kept pairs' Δlog π(y+) by +1.33 / +1.23 (95% CI -2.4..+5.1 / -1.9..+4.4; 3 / 2 "
    "of 3 seeds), a random half by -0.77",
)
def test_full_run_filtering_reduces_displacement(full_result):
    filt = full_result["filtering"]
    assert full_result["claims"]["ln_ches_filter_reduces_displacement_on_kept"]
    assert full_result["claims"]["ln_ches_filter_beats_random_filter"]
    assert filt["ln_ches"]["filtered_minus_full_on_kept"]["ci95_low"] > 0


def test_gradient_ches_is_the_first_order_change_of_one_gradient_step():
    """One plain gradient step of DPO on a pair alone, from its reference, moves log pi(y+) by -lr beta/2 times
    <g+, g-> - ||g+||^2: the exact first-order quantity that CHES approximates from the last hidden states."""
    from rljax.lm.model import init_params

    setup = ld.Setup(**(ld.QUICK | {"dpo_optimizer": "sgd", "pair_steps": 1}))
    pairs = ld.make_task(setup, 0)[1]
    model = setup.model()
    params = init_params(model, jax.random.key(0))
    fields = {k: jnp.asarray(v) for k, v in ld.pair_fields(pairs).items()}
    gradient_ches = np.asarray(ld.make_gradient_ches(model, chunk=10)(params, fields))
    logp_chosen = np.asarray(ld.make_forward(model)(params, fields)[2])
    lr = 1e-3
    after, _ = ld.make_single_pair_dpo(setup, pairs)(params, fields, jnp.float32(lr))
    delta = np.asarray(after)[:, 0] - logp_chosen
    assert (gradient_ches < 0).all()  # ||g+||^2 dominates at a random init: every pair's y+ rises
    np.testing.assert_allclose(delta, -lr * setup.beta / 2 * gradient_ches, rtol=1e-2, atol=1e-5)
