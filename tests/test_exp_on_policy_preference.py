"""The on-policy-preference experiment: a smoke run at a tiny budget."""

import json

import pytest

from experiments import on_policy_preference as exp
from experiments.__main__ import main as cli


@pytest.mark.integration
def test_quick_run_writes_all_outputs(tmp_path):
    out = tmp_path / "opp"
    assert cli(["on-policy-preference", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ("config.json", "result.json", "rewards.png"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    (peak,) = result["peaks"]
    r = result["peaks"][peak]
    assert set(r["arms"]) == set(exp.ARMS)
    assert all(0.0 <= arm["mean"] <= 1.0 for arm in r["arms"].values())  # rewards are means of exp(-x^2)
    means = [arm["mean"] for arm in r["arms"].values()]
    assert r["spread"] == pytest.approx(max(means) - min(means))
    gap = r["paired"]["online_dpo_minus_offline_dpo"]["mean"]
    assert gap == pytest.approx(r["arms"]["online_dpo"]["mean"] - r["arms"]["offline_dpo"]["mean"], abs=1e-9)
    assert result["claim"]["holds"] is False  # one peak: the aligned half is not run


def test_the_offline_round_must_use_every_prompt_once():
    with pytest.raises(SystemExit, match="num_prompts must equal num_updates x prompts_per_update = 480, got 100"):
        exp.main(exp.argparse.Namespace(quick=False, set=["num_prompts=100"], seed=0, out=None, resume=None,
                                        overwrite=False, debug=False, no_progress=True, tensorboard=False))
