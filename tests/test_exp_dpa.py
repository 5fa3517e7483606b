"""The dpa experiment: prompts, attributes and the directional reward by hand, and a smoke run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import dpa as exp
from experiments.__main__ import main as cli


def test_prompts_attributes_and_the_directional_reward():
    s = exp.Settings(num_tasks=3, num_directions=3, length=4)
    prompts = exp.prompts_of(s)
    assert prompts.shape == (9, 2)
    np.testing.assert_array_equal(np.unique(prompts[:, 0]), [5, 6, 7])  # direction tokens after the 3 task tokens
    np.testing.assert_array_equal(np.unique(prompts[:, 1]), [2, 3, 4])
    rows = jnp.array([[5, 3], [7, 3], [7, 4]])  # theta -45, +45, +45
    completions = jnp.array([[3, 2, 1, 0], [3, 2, 1, 0], [2, 2, 2, 2]])  # right and 2 tokens; right; wrong and 4 tokens
    helpful, verbosity = exp.attributes(s, rows, completions)
    np.testing.assert_allclose(helpful, [1, 1, 0])
    np.testing.assert_allclose(verbosity, [0.5, 0.5, 1.0])
    c = np.cos(np.pi / 4)
    np.testing.assert_allclose(exp.directional_reward(s)(rows, completions), [c - c * 0.5, c + c * 0.5, c * 1.0], rtol=1e-6)
    assert exp.rank_correlation([1, 2, 3], [5, 5, 5]) == 0.0 and exp.rank_correlation([1, 2, 3], [1, 4, 9]) == 1.0


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "dpa"
    assert cli(["dpa", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "directions.png"):
        assert (out / name).exists(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    result = json.loads((out / "result.json").read_text())
    for arm in exp.ARMS:
        lengths = np.asarray(result["arms"][arm]["length"])
        assert lengths.shape == (settings["num_directions"],) and np.all((lengths >= 0) & (lengths <= settings["length"]))
    claim = result["claim"]
    assert claim["holds"] == (claim["verbosity_follows_theta"] and claim["helpfulness_kept"])
