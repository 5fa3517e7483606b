"""The regret-preferences experiment: tasks, labels from each model, and a smoke run."""

import json

import jax
import numpy as np
import pytest

from experiments import regret_preferences as exp
from experiments.__main__ import main as cli


def test_task_labels_follow_each_preference_model():
    s = exp.Settings(sizes=(50, 400))
    mdp, states, actions, labels, w0 = exp.make_task(s)(jax.random.PRNGKey(0))
    assert states.shape == actions.shape == (400, 2, 3)
    assert set(labels) == {"regret", "partial_return"}
    # Labels are drawn from the models: they agree with the sign of the true logits most of the time,
    # and the two models disagree on some pairs (regret sees progress towards the goal, partial return does not).
    agreement = {}
    for source, y in labels.items():
        logits = exp.rfp.segment_logits(exp.fit_config(s, source), np.asarray(exp.delivery.TRUE_WEIGHTS),
                                        mdp.next_state, mdp.features, mdp.terminal, states, actions)
        agreement[source] = float(((np.asarray(logits) > 0) == (np.asarray(y) > 0.5)).mean())
    assert min(agreement.values()) > 0.8
    assert float((labels["regret"] != labels["partial_return"]).mean()) > 0.05
    assert float(np.abs(np.asarray(w0)).max()) < 0.1


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "rp"
    assert cli(["regret-preferences", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "solved.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    for source, per_model in result["scaled_return_per_mdp"].items():
        for model, values in per_model.items():
            values = np.asarray(values)
            assert values.shape == (3, 2) and np.all(values <= 1.0 + 1e-6)
            assert result["solved"][source][model] == (values >= 0.9).sum(0).tolist()


def test_sizes_must_be_positive(tmp_path):
    with pytest.raises(SystemExit, match="--set sizes: expected one or more positive"):
        cli(["regret-preferences", "--set", "sizes=(0,10)", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
