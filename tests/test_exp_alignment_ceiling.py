"""The alignment-ceiling diagnostics: pairwise accuracy and the knee correlations by hand, and a smoke run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import alignment_ceiling as exp
from experiments.__main__ import main as cli


def test_pairwise_accuracy_by_hand():
    # Three responses with probabilities 0.5, 0.3, 0.2; gold ranks 0 < 1 < 2, the proxy swaps 1 and 2.
    logp = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    gold, proxy = jnp.array([0.0, 1.0, 2.0]), jnp.array([0.0, 2.0, 1.0])
    # Ordered pairs with different gold: (0,1), (0,2), (1,2) both ways; weights 0.15, 0.10, 0.06 (each twice);
    # the proxy agrees on (0,1) and (0,2): (0.15 + 0.10) / (0.15 + 0.10 + 0.06).
    np.testing.assert_allclose(exp.pairwise_accuracy(logp, proxy, gold), 0.25 / 0.31, rtol=1e-6)
    np.testing.assert_allclose(exp.pairwise_accuracy(logp, gold, gold), 1.0, rtol=1e-6)


def test_spearman_around_the_knee():
    proxy = np.arange(7.0)
    gold = np.array([0.0, 1.0, 2.0, 3.0, 2.5, 2.0, 1.0])  # peaks at index 3
    assert exp.spearman_around_knee(proxy, gold) == pytest.approx((1.0, -1.0))
    before, after = exp.spearman_around_knee(proxy[:5], np.array([0.0, 1, 2, 3, 2]))  # only 2 points after
    assert before == pytest.approx(1.0) and np.isnan(after)


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "ac"
    assert cli(["alignment-ceiling", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "diagnostics.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert result["claims"]["gold_peaks_while_proxy_rises"]["proxy_non_decreasing"]  # best-of-n guarantees it
    assert len(result["mean_curves"]["gold"]) == len(result["ns"]) == 7
    assert abs(result["mean_curves"]["gold"][0]) < 1e-5  # n = 1 is the base policy, where gold is standardised
