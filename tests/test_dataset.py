"""The dataset file pair: round trip, validation errors, trajectories, scores, make-dataset."""

import json
import re

import jax
import numpy as np
import pytest

import envs
from experiments import experts, make_dataset
from experiments.__main__ import main as cli
from rljax.agents import ppo
from rljax.core import dataset as ds
from rljax.core import rollout as rollout_lib
from rljax.core.dataset import DatasetError


def random_rollout(env_name: str, num_envs: int, num_steps: int, seed: int = 0):
    """A time-major Trajectory of uniform random actions."""
    env, params = envs.make(env_name)
    policy = experts.random_policy(env, params)

    @jax.jit
    def run(key):
        carry = rollout_lib.reset(env, params, jax.random.fold_in(key, 1), num_envs)
        return rollout_lib.rollout(env, params, policy, carry, key, num_steps)[1]

    return jax.device_get(run(jax.random.PRNGKey(seed)))


@pytest.fixture(scope="module")
def truncation_traj():
    # probe/truncation: every episode is 5 steps, ended by truncation, never terminated.
    return random_rollout("probe/truncation", num_envs=3, num_steps=12)


@pytest.fixture(scope="module")
def cartpole_traj():
    return random_rollout("gymnax/CartPole-v1", num_envs=2, num_steps=100)


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("env_name", ["gymnax/CartPole-v1", "probe/vector-reward"])
def test_save_then_load_gives_the_same_arrays_and_metadata(tmp_path, env_name):
    data = ds.from_trajectory(random_rollout(env_name, 2, 30), {"env": env_name, "policy": "random", "command": "test"})
    npz_path, json_path = ds.save(data, str(tmp_path / "d.npz"))  # a trailing .npz is stripped
    assert (npz_path, json_path) == (str(tmp_path / "d.npz"), str(tmp_path / "d.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.npz"]

    loaded = ds.load(str(tmp_path / "d"))
    for name in ds.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name), err_msg=name)
        assert getattr(loaded, name).dtype == getattr(data, name).dtype, name
    assert loaded.metadata == data.metadata
    meta = loaded.metadata
    assert meta["env"] == env_name and meta["num_transitions"] == len(data.obs)
    np.testing.assert_allclose(meta["episode_returns"], data.episode_returns)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["created"])
    if env_name == "probe/vector-reward":  # one-step episodes, reward (o, 1): k = 2 objectives
        assert data.reward.shape == (60, 2) and data.episode_returns.shape == (60, 2)
    else:
        assert data.action.dtype == np.int32 and data.obs.dtype == np.float32


def test_save_refuses_to_overwrite(tmp_path, truncation_traj):
    data = ds.from_trajectory(truncation_traj, {})
    ds.save(data, str(tmp_path / "d"))
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path / "d.npz")) + " already exists"):
        ds.save(data, str(tmp_path / "d.json"))
    ds.save(data, str(tmp_path / "d"), overwrite=True)


# ---------------------------------------------------------------- validation

# probe/truncation, 2 envs x 10 steps: 4 episodes of 5 rows, truncated on rows 4, 9, 14, 19.


def corrupt_ids(a):
    a["episode_id"][10:] += 1


def corrupt_terminated_mid_episode(a):
    a["terminated"][2] = True


def corrupt_next_obs(a):
    a["next_obs"][7] = 1.0


def corrupt_unfinished_episode(a):
    a["truncated"][4] = False


CORRUPTIONS = [
    (lambda a: a.update(reward=a["reward"][:-1]), "field 'reward': expected 20 rows .* got 19"),
    (lambda a: a.pop("truncated"), "missing field 'truncated'; expected fields: obs, action, reward, next_obs"),
    (lambda a: a.update(value=a["reward"]), r"unknown field\(s\) \['value'\]"),
    (lambda a: a.update(terminated=a["terminated"].astype(np.int64)), "field 'terminated': expected bool, got int64"),
    (lambda a: a.update(obs=a["obs"].astype(np.int32)), "field 'obs': expected a floating dtype .* got int32"),
    (lambda a: a.update(episode_id=a["episode_id"].astype(np.float32)), "field 'episode_id': expected an integer"),
    (lambda a: a.update(next_obs=a["next_obs"][:, [0, 0]]), r"field 'next_obs': expected shape \(20, 1\) .* got \(20, 2\)"),
    (lambda a: a["obs"].__setitem__(13, np.nan), "field 'obs': NaN or inf at row 13"),
    (lambda a: a["reward"].__setitem__(6, np.inf), "field 'reward': NaN or inf at row 6"),
    (corrupt_ids, "field 'episode_id': row 10 has id 3 after 1 at row 9"),
    (corrupt_terminated_mid_episode, "field 'terminated': set at row 2, but episode 0 continues at row 3"),
    (corrupt_next_obs, "field 'next_obs': row 7 differs from obs at row 8 .*episode 1"),
    (corrupt_unfinished_episode, "row 4 is the last row of episode 0 but neither is set"),
    (lambda a: a["terminated"].__setitem__(9, True), "both true at row 9"),
]


@pytest.fixture(scope="module")
def probe_arrays():
    data = ds.from_trajectory(random_rollout("probe/truncation", 2, 10), {"env": "probe/truncation"})
    assert np.flatnonzero(data.truncated).tolist() == [4, 9, 14, 19]
    return data.arrays(), data.metadata


def write_pair(path, arrays, metadata):
    np.savez(str(path) + ".npz", **arrays)
    (path.parent / (path.name + ".json")).write_text(json.dumps(metadata))


@pytest.mark.parametrize("corrupt, message", CORRUPTIONS)
def test_each_corruption_is_named(tmp_path, probe_arrays, corrupt, message):
    arrays = {k: v.copy() for k, v in probe_arrays[0].items()}
    corrupt(arrays)
    write_pair(tmp_path / "bad", arrays, probe_arrays[1])
    with pytest.raises(DatasetError, match=message):
        ds.load(str(tmp_path / "bad"))


@pytest.mark.parametrize("metadata, message", [
    ([1, 2], "metadata: expected a dict"),
    ({"num_transitions": 21}, "metadata 'num_transitions': says 21, the arrays hold 20"),
])
def test_bad_metadata_is_named(tmp_path, probe_arrays, metadata, message):
    write_pair(tmp_path / "bad", probe_arrays[0], metadata)
    with pytest.raises(DatasetError, match=message):
        ds.load(str(tmp_path / "bad"))


def test_what_validation_allows(tmp_path, probe_arrays):
    # next_obs of an episode's last row is the pre-reset observation: it need not match the next row,
    # and the last episode in the file may be unfinished.
    arrays = {k: v.copy() for k, v in probe_arrays[0].items()}
    arrays["next_obs"][9] = 1.0
    arrays["truncated"][19] = False
    write_pair(tmp_path / "ok", arrays, {})
    np.testing.assert_array_equal(ds.load(str(tmp_path / "ok")).next_obs[9], [1.0])


def test_save_validates_first(tmp_path, probe_arrays):
    arrays = {k: v.copy() for k, v in probe_arrays[0].items()}
    corrupt_next_obs(arrays)
    with pytest.raises(DatasetError, match="row 7"):
        ds.save(ds.Dataset(**arrays, metadata={}), str(tmp_path / "x"))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- from_trajectory


def test_from_trajectory_splits_each_env_column_into_episodes(truncation_traj):
    # 3 envs x 12 steps: each column holds episodes at steps 0-4 and 5-9 and an unfinished 10-11.
    data = ds.from_trajectory(truncation_traj, {})
    ds.validate(data)
    assert data.num_transitions == 30 and data.num_episodes == 6
    np.testing.assert_array_equal(data.episode_id, np.repeat(np.arange(6), 5))
    np.testing.assert_array_equal(data.episode_lengths, [5] * 6)
    np.testing.assert_array_equal(np.flatnonzero(data.truncated), [4, 9, 14, 19, 24, 29])
    assert not data.terminated.any()
    np.testing.assert_array_equal(data.episode_returns, [5.0] * 6)  # reward 1 per step
    # Episode order: env 0's episodes, then env 1's, then env 2's.
    for e in range(3):
        np.testing.assert_array_equal(data.action[10 * e: 10 * (e + 1)], truncation_traj.action[:10, e])
    assert data.metadata["num_transitions"] == 30 and data.metadata["episode_returns"] == [5.0] * 6


def test_from_trajectory_can_keep_unfinished_episodes(truncation_traj):
    data = ds.from_trajectory(truncation_traj, {}, drop_partial=False)
    ds.validate(data)
    np.testing.assert_array_equal(data.episode_lengths, [5, 5, 2] * 3)
    # The kept tails (rows 10-11, 22-23, 34-35) end cut, as by a time limit.
    np.testing.assert_array_equal(np.flatnonzero(data.truncated), [4, 9, 11, 16, 21, 23, 28, 33, 35])


def test_from_trajectory_keeps_the_pre_reset_next_obs(cartpole_traj):
    data = ds.from_trajectory(cartpole_traj, {})
    ds.validate(data)
    same = data.episode_id[:-1] == data.episode_id[1:]
    assert data.num_episodes >= 4 and same.sum() > 100
    np.testing.assert_allclose(data.next_obs[:-1][same], data.obs[1:][same], rtol=1e-6)
    # At an episode end next_obs is where the pole fell, not the next episode's reset state.
    ends = np.flatnonzero(~same)
    assert data.terminated[ends].all()
    assert (np.abs(data.next_obs[ends] - data.obs[ends + 1]).max(axis=1) > 0.01).all()
    assert ((np.abs(data.next_obs[ends, 2]) > 0.2094) | (np.abs(data.next_obs[ends, 0]) > 2.4)).all()


def test_no_complete_episode_is_an_error(truncation_traj):
    short = jax.tree.map(lambda x: x[:3], truncation_traj)
    with pytest.raises(DatasetError, match=r"no complete episode .*3 steps x 3 envs"):
        ds.from_trajectory(short, {})


def test_concatenate_renumbers_episodes(truncation_traj, cartpole_traj):
    a = ds.from_trajectory(truncation_traj, {})
    both = ds.concatenate([a, a], {"policy": "twice"})
    ds.validate(both)
    np.testing.assert_array_equal(both.episode_id, np.repeat(np.arange(12), 5))
    assert both.metadata["policy"] == "twice" and both.metadata["num_episodes"] == 12
    with pytest.raises(DatasetError, match="field 'obs' of dataset 1 has rows of shape \\(4,\\)"):
        ds.concatenate([a, ds.from_trajectory(cartpole_traj, {})], {})


def test_select_episodes_renumbers_and_keeps_metadata(cartpole_traj):
    data = ds.from_trajectory(cartpole_traj, {"env": "gymnax/CartPole-v1"})
    picked = ds.select_episodes(data, [2, 0])
    ds.validate(picked)
    np.testing.assert_array_equal(picked.episode_lengths, data.episode_lengths[[2, 0]])
    np.testing.assert_array_equal(picked.episode_returns, data.episode_returns[[2, 0]])
    np.testing.assert_array_equal(picked.obs[: data.episode_lengths[2]], data.obs[data.episode_id == 2])
    meta = picked.metadata
    assert meta["env"] == "gymnax/CartPole-v1" and meta["source_episodes"] == [2, 0] and meta["num_episodes"] == 2
    with pytest.raises(DatasetError, match=r"expected episode ids in \[0, \d+\), got \[99\]"):
        ds.select_episodes(data, [0, 99])


def test_check_matches_env_names_the_mismatch(cartpole_traj):
    data = ds.from_trajectory(cartpole_traj, {})
    cartpole, cartpole_params = envs.make("gymnax/CartPole-v1")
    pendulum, pendulum_params = envs.make("gymnax/Pendulum-v1")
    ds.check_matches_env(data, cartpole, cartpole_params)  # fits
    with pytest.raises(DatasetError, match=r"demo.npz: field 'obs' has rows of shape \(4,\), the env expects \(3,\)"):
        ds.check_matches_env(data, pendulum, pendulum_params, name="demo.npz")
    import dataclasses

    as_float = dataclasses.replace(data, action=data.action.astype(np.float32))
    with pytest.raises(DatasetError, match="field 'action' has dtype float32 .* discrete actions"):
        ds.check_matches_env(as_float, cartpole, cartpole_params)
    out_of_range = dataclasses.replace(data, action=np.where(np.arange(len(data.action)) == 7, 2, data.action))
    with pytest.raises(DatasetError, match="field 'action' is 2 at row 7; the env's actions are 0..1"):
        ds.check_matches_env(out_of_range, cartpole, cartpole_params)


# ---------------------------------------------------------------- scores


def test_normalized_score():
    assert ds.normalized_score(0.0, 0.0, 100.0) == 0.0
    assert ds.normalized_score(100.0, 0.0, 100.0) == 100.0
    assert ds.normalized_score(50.0, 0.0, 100.0) == 50.0
    np.testing.assert_allclose(ds.normalized_score([-1200.0, -700.0, -200.0], -1200.0, -200.0), [0.0, 50.0, 100.0])
    with pytest.raises(ValueError, match=r"expert_return \(5.0\) equals random_return \(5.0\)"):
        ds.normalized_score(3.0, 5.0, 5.0)


def test_scale_rewards_by_return_range():
    arrays = {"obs": np.zeros((5, 1), np.float32), "action": np.zeros((5, 1), np.float32),
              "reward": np.array([1.0, 2.0, 3.0, -1.0, 1.0], np.float32), "next_obs": np.zeros((5, 1), np.float32),
              "terminated": np.zeros(5, bool), "truncated": np.array([0, 0, 1, 0, 1], bool),
              "episode_id": np.array([0, 0, 0, 1, 1])}
    data = ds.Dataset(**arrays, metadata={"env": "x"})  # episode returns 6 and 0
    scaled, factor = ds.scale_rewards_by_return_range(data)
    assert factor == pytest.approx(1000.0 / 6.0)
    np.testing.assert_allclose(scaled.reward, arrays["reward"] * 1000.0 / 6.0, rtol=1e-6)
    np.testing.assert_allclose(scaled.episode_returns, [1000.0, 0.0], atol=1e-3)  # the returns now span 1000
    assert scaled.metadata == {"env": "x", "reward_scale": factor} and data.metadata == {"env": "x"}
    np.testing.assert_array_equal(data.reward, arrays["reward"])  # the input is untouched
    flat = ds.Dataset(**{**arrays, "reward": np.array([1.0, 0, 0, 1.0, 0], np.float32)}, metadata={})
    with pytest.raises(DatasetError, match=r"episode returns span 0.0 \(over 2 episodes\)"):
        ds.scale_rewards_by_return_range(flat)
    vector = ds.Dataset(**{**arrays, "reward": np.zeros((5, 2), np.float32)}, metadata={})
    with pytest.raises(DatasetError, match=r"field 'reward' has shape \(5, 2\)"):
        ds.scale_rewards_by_return_range(vector)


def test_offline_rl_rewards_scale_only_the_locomotion_envs_of_the_dvl_and_odice_codes():
    from experiments.common import offline_rl_rewards

    arrays = {"obs": np.zeros((4, 1), np.float32), "action": np.zeros((4, 1), np.float32),
              "reward": np.array([1.0, 1.0, 0.5, 0.0], np.float32), "next_obs": np.zeros((4, 1), np.float32),
              "terminated": np.zeros(4, bool), "truncated": np.array([0, 1, 0, 1], bool),
              "episode_id": np.array([0, 0, 1, 1])}
    data = ds.Dataset(**arrays, metadata={})  # episode returns 2.0 and 0.5
    assert offline_rl_rewards(data, "gymnax/Pendulum-v1") is data
    for env in ("brax/hopper", "brax/halfcheetah", "brax/walker2d"):
        np.testing.assert_allclose(offline_rl_rewards(data, env).reward, arrays["reward"] * 1000.0 / 1.5, rtol=1e-6)
    assert offline_rl_rewards(data, "brax/ant") is data


# ---------------------------------------------------------------- make-dataset


def test_make_dataset_random_end_to_end(tmp_path, capsys):
    out = tmp_path / "cartpole"
    args = ["make-dataset", "--env", "gymnax/CartPole-v1", "--policy", "random", "--steps", "500", "--out", str(out)]
    assert cli(args) == 0
    data = ds.load(str(out))
    meta = data.metadata
    assert meta["env"] == "gymnax/CartPole-v1" and meta["policy"] == "random" and meta["seed"] == 0
    assert meta["command"].startswith("python -m experiments make-dataset --env gymnax/CartPole-v1 --policy random")
    assert "--steps 500" in meta["command"]
    # 8 envs x ceil(500 / 8) steps collected; only complete episodes kept.
    assert meta["env_steps_collected"] == 504 and 0 < data.num_transitions <= 504
    assert (data.terminated | data.truncated)[-1]
    assert set(np.unique(data.action)) <= {0, 1} and data.action.dtype == np.int32
    assert 10 < meta["random_return"] < 40  # CartPole's random policy lasts about 22 steps
    np.testing.assert_allclose(meta["episode_returns"], data.episode_returns)
    assert f"{data.num_transitions:,} transitions in {data.num_episodes:,} episodes" in capsys.readouterr().out

    before = (tmp_path / "cartpole.npz").read_bytes()
    with pytest.raises(FileExistsError, match="cartpole.npz already exists.*--overwrite"):
        cli([*args, "--seed", "1"])
    assert (tmp_path / "cartpole.npz").read_bytes() == before
    cli([*args, "--seed", "1", "--overwrite"])
    assert ds.load(str(out)).metadata["seed"] == 1 and (tmp_path / "cartpole.npz").read_bytes() != before


def test_mixed_dataset_stores_raw_observations(tmp_path):
    # Obs in {0, 1}; the PPO network sees them normalised (to about -1 and +1), the dataset must not.
    config = ppo.PPOConfig(
        env="probe/reward-from-observation-and-action", num_envs=4, num_steps=8, total_timesteps=64,
        update_epochs=1, num_minibatches=1, hidden_sizes=(8,), normalize_obs=True,
    )
    data = make_dataset.make(
        "mixed", config.env, jax.random.PRNGKey(0), steps=32, num_envs=4, medium_fraction=0.5,
        config=config, hparams=ppo.PPOHParams(),
    )
    ds.validate(data)
    assert set(np.unique(data.obs)) == {0.0, 1.0}
    # One-step episodes: nothing is dropped; 16 random episodes, then 16 medium ones.
    np.testing.assert_array_equal(data.episode_id, np.arange(32))
    meta = data.metadata
    assert [(p["policy"], p["num_transitions"]) for p in meta["parts"]] == [("random", 16), ("medium", 16)]
    assert meta["agent_steps"] == 32  # 1 of 2 updates of 4 envs x 8 steps
    assert 0.0 <= meta["policy_return"] <= 1.0 and 0.0 <= meta["random_return"] <= 1.0
