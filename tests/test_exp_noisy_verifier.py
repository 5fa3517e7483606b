"""The noisy-verifier experiment: a smoke run at a tiny budget, and its arms' coefficients."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import noisy_verifier as exp
from experiments.__main__ import main as cli
from rljax.losses import grpo as grpo_losses


def test_each_arm_builds_the_papers_coefficients():
    """Oracles see the clean verdicts; the noisy arms of one key see one channel draw; PGBC is its matched
    control over 1 - rho0 - rho1 (leave-one-out), PGFC its control minus 1 - rho1 (no baseline)."""
    clean = jax.random.bernoulli(jax.random.key(0), 0.5, (32,)).astype(jnp.float32)
    key = jax.random.key(1)
    coefficients = {arm: exp.advantage_fn(arm, 8, 0.1, 0.2, 1.0)(key, clean) for arm in exp.ARMS}
    np.testing.assert_allclose(coefficients["oracle_direct"], clean)
    np.testing.assert_allclose(coefficients["oracle_z"], grpo_losses.group_advantages(clean, 8))
    noisy = coefficients["noise_direct"]
    assert set(np.unique(np.asarray(noisy)).tolist()) <= {0.0, 1.0} and not np.array_equal(noisy, clean)
    np.testing.assert_allclose(coefficients["noise_z"], grpo_losses.group_advantages(noisy, 8))
    np.testing.assert_allclose(coefficients["pgbc"], coefficients["noise_loo"] / 0.7, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(coefficients["pgfc"], noisy - 0.8, atol=1e-6)


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "nv"
    assert cli(["noisy-verifier", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    evals = settings["num_updates"] // settings["eval_every"] + 1
    (level,) = result["levels"]
    arms = result["levels"][level]
    assert set(arms) == set(exp.ARMS)
    starts = {arm: m["mean_curve"][0] for arm, m in arms.items()}
    for arm, m in arms.items():
        curve = np.asarray(m["mean_curve"])
        assert curve.shape == (evals,) and np.all((curve > 0) & (curve < 1))
        # every arm starts from the same SFT policies
        assert starts[arm] == pytest.approx(result["sft_accuracy"]["mean"], rel=1e-5)
    claim = result["claim"]
    recovery = claim["recovery"]
    assert claim["holds"] == (all(r["recovers"] for r in recovery.values()) and all(claim["pgfc_ge_pgbc"].values()))
    for corrected, (oracle, noise) in (("pgbc", ("oracle_loo", "noise_loo")), ("pgfc", ("oracle_direct", "noise_direct"))):
        gap = arms[oracle]["final"]["mean"] - arms[noise]["final"]["mean"]
        assert recovery[corrected]["gap"] == pytest.approx(gap)
        paired = result["paired_difference"][level][corrected]["mean"]
        assert paired == pytest.approx(arms[corrected]["final"]["mean"] - arms[noise]["final"]["mean"], abs=1e-6)
    assert result["audit"][level]["pgbc"]["cosine"] == pytest.approx(1.0, abs=1e-5)
