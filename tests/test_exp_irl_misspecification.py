"""The irl-misspecification experiment: the learner's assumptions, one short worst-case search, a smoke run."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import irl_misspecification as exp
from experiments.__main__ import main as cli


def test_misspecifications_change_one_parameter_each():
    s = exp.Settings()
    with jax.enable_x64(True):
        rows, assumed = exp.misspecifications(s)
    assert rows[0] == ("exact", 0.0) and len(rows) == 1 + 6 + 3 + 2
    for (kind, error), gamma, tau_error, temperature in zip(rows, *assumed):
        assert gamma == pytest.approx(s.gamma + error if kind == "gamma" else s.gamma, abs=1e-15)
        assert tau_error == (error if kind == "tau" else 0.0)
        assert temperature == (s.temperature * error if kind == "temperature" else s.temperature)


def test_short_search_separates_a_discount_error_from_the_correct_model():
    s = dataclasses.replace(exp.Settings(), num_mdps=1, num_restarts=1, num_steps=20, scale_caps=(1e6,),
                            gamma_errors=(0.001,), tau_errors=(0.01,), temperature_factors=(2.0,), value_iters=500)
    with jax.enable_x64(True):
        rows, assumed = exp.misspecifications(s)
        problems = jax.vmap(exp.make_problem(s))(jax.random.split(jax.random.PRNGKey(0), 1))
        distance, residual, ratio = exp.run_model(s, "mce", problems, assumed, jax.random.PRNGKey(1))
    d = {kind: float(distance[0, i, 0, 0]) for i, (kind, _) in enumerate(rows)}
    assert d["exact"] < 1e-8 and d["temperature"] < 1e-8
    assert d["gamma"] > 0.5 and d["tau"] > 0.5
    assert float(residual.max()) < 1e-8  # every found reward is one the assumed model maps to the policy
    assert float(ratio.min()) > 1e3  # and it needed a large potential or redistribution


@pytest.mark.integration
def test_quick_run_writes_all_outputs_and_its_claims_hold(tmp_path):
    out = tmp_path / "irl"
    assert cli(["irl-misspecification", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "worst_case.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert all(claim["holds"] for claim in result["claims"].values()), result["claims"]
    per_mdp = result["worst_case_starc_per_mdp_at_largest_cap"]["boltzmann"]
    assert np.all(np.asarray(per_mdp["gamma +0.001"]) >= 0.3) and np.all(np.asarray(per_mdp["exact"]) < 1e-8)


@pytest.mark.parametrize("setting, message", [("gamma_errors=(0.2,)", "every gamma \\+ error must lie in"),
                                              ("tau_errors=(0.0,)", "non-zero errors"),
                                              ("tau_errors=(1.5,)", "mixing weights in"),
                                              ("temperature_factors=(-1.0,)", "temperature_factors")])
def test_bad_settings_exit_naming_the_field(tmp_path, setting, message):
    with pytest.raises(SystemExit, match=message):
        cli(["irl-misspecification", "--set", setting, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
