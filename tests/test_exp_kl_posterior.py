"""The kl-posterior experiment: a smoke run at a tiny budget."""

import json

import numpy as np
import pytest

from experiments import kl_posterior as exp
from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "klp"
    assert cli(["kl-posterior", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "curves.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    evals = settings["num_updates"] // settings["eval_every"] + 1
    (beta,) = result["betas"]
    r = result["betas"][beta]
    assert set(r["arms"]) == set(exp.ARMS)
    beta_log_z = r["posterior"]["beta_log_z"]["mean"]
    for arm in r["arms"].values():
        curves = {m: np.asarray(arm["mean_curve"][m]) for m in exp.METRICS}
        assert all(c.shape == (evals,) for c in curves.values())
        assert np.all(curves["kl_to_posterior"] >= 0)
        # J(pi) = beta log Z - beta KL(pi || pi*): per seed, so also in the mean over seeds
        np.testing.assert_allclose(curves["objective"], beta_log_z - float(beta) * curves["kl_to_posterior"], atol=1e-4)
        for m in exp.METRICS:  # every arm starts from the same pi_0
            assert curves[m][0] == pytest.approx(r["arms"]["rl"]["mean_curve"][m][0], rel=1e-6)
    claim = result["claim"]
    assert claim["holds"] == all(all(v.values()) for v in claim["per_beta"].values())
    final = lambda arm, m: r["arms"][arm]["final"][m]["mean"]  # noqa: E731
    assert claim["per_beta"][beta]["kl_rl_reaches_posterior"] == (final("kl_rl", "kl_to_posterior") < exp.CLAIM_KL)
