"""The dno experiment: the intransitive oracle, exact win rates, and a smoke run at a tiny budget."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import dno as exp
from experiments.__main__ import main as cli


def test_the_oracle_is_a_preference_and_intransitive():
    quality = jnp.zeros(3)  # equal quality: only the styles decide
    oracle = np.asarray(exp.oracle_matrix(quality, jnp.array([0, 1, 2]), 2.0, 1.0))
    np.testing.assert_allclose(oracle + oracle.T, 1.0, rtol=1e-6)  # P(y > y') + P(y' > y) = 1
    assert oracle[0, 1] > 0.5 and oracle[1, 2] > 0.5 and oracle[2, 0] > 0.5  # rock, paper, scissors: a cycle
    np.testing.assert_allclose(oracle[0, 1], 1 / (1 + np.exp(-1.0)), rtol=1e-6)
    # exact head-to-head win rates: a policy against itself wins half the time
    logp = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    np.testing.assert_allclose(exp.win_rate(logp, logp, jnp.asarray(oracle)), 0.5, rtol=1e-6)
    point = lambda i: jnp.log(jnp.eye(3)[i] + 1e-30)  # noqa: E731
    np.testing.assert_allclose(exp.win_rate(point(0), point(1), jnp.asarray(oracle)), oracle[0, 1], rtol=1e-5)


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "dno"
    assert cli(["dno", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "win_rates.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    assert len(result["successive"]) == len(result["exact_successive"]) == settings["rounds"]
    assert np.asarray(result["style_mass"]).shape == (settings["rounds"] + 1, 3)
    np.testing.assert_allclose(np.asarray(result["style_mass"]).sum(axis=1), 1.0, rtol=1e-5)
    # the first iteration's step is also its win rate against pi_0
    assert result["successive"][0]["mean"] == pytest.approx(result["against_initial"][0]["mean"], rel=1e-6)
    claim = result["claim"]
    assert claim["holds"] == (all(claim["each_iteration_beats_the_last"]) and claim["final_beats_offline"])
