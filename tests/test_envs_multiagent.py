"""Multi-agent envs: Gems dynamics by hand, its tabular view against the jitted step, the JaxMARL adapter."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs.multiagent as ma
from envs.multiagent import gems as gems_lib
from rljax.core.config import ConfigError

STAY, UP, RIGHT, DOWN, LEFT = range(5)


@pytest.fixture(scope="module")
def gems():
    return ma.make("multiagent/gems")


def _act(a0, a1):
    return {"agent_0": jnp.asarray(a0), "agent_1": jnp.asarray(a1)}


def test_reset_observations_and_spaces(gems):
    env, params = gems
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert list(obs) == ["agent_0", "agent_1"] and env.num_agents == 2
    assert obs["agent_0"].shape == env.observation_space("agent_0", params).shape == (53,)
    # Own cell first: agent_0 at (0, 0) -> index 0; agent_1 at (4, 4) -> index 24; all gems present.
    assert obs["agent_0"][0] == 1 and obs["agent_0"][25 + 24] == 1
    assert obs["agent_1"][24] == 1 and obs["agent_1"][25 + 0] == 1
    np.testing.assert_array_equal(obs["agent_0"][-3:], [1, 1, 1])
    assert env.action_space("agent_1", params).n == 5


def test_known_move_and_wall(gems):
    env, params = gems
    _, state = env.reset(jax.random.PRNGKey(0), params)
    # agent_0 moves right from (0, 0); agent_1 pushes into the wall below (4, 4) and stays.
    _, state, rewards, dones, _ = env.step(jax.random.PRNGKey(1), state, _act(RIGHT, DOWN), params)
    np.testing.assert_array_equal(state.pos, [[0, 1], [4, 4]])
    assert float(rewards["agent_0"]) == 0.0 and float(rewards["agent_1"]) == 0.0
    assert not bool(dones["__all__"]) and int(state.time) == 1


def test_gem_pickup_rewards_only_the_picker_with_its_own_value(gems):
    env, params = gems
    state = gems_lib.GemsState(pos=jnp.array([[0, 3], [2, 3]]), gems=jnp.ones(3, bool), time=jnp.zeros((), jnp.int32))
    # agent_0 steps onto gem 0 at (0, 4) (its value 1.0); agent_1 steps onto the centre gem (2, 2) (its value 1.0).
    _, nxt, rewards, dones, info = env.step_env(jax.random.PRNGKey(0), state, _act(RIGHT, LEFT), params)
    assert float(rewards["agent_0"]) == pytest.approx(1.0) and float(rewards["agent_1"]) == pytest.approx(1.0)
    np.testing.assert_array_equal(nxt.gems, [False, False, True])
    # agent_0 takes the last gem (4, 0), worth -0.5 to it: the game terminates.
    state = gems_lib.GemsState(pos=jnp.array([[3, 0], [0, 0]]), gems=jnp.array([False, False, True]),
                               time=jnp.zeros((), jnp.int32))
    _, nxt, rewards, dones, info = env.step_env(jax.random.PRNGKey(0), state, _act(DOWN, STAY), params)
    assert float(rewards["agent_0"]) == pytest.approx(-0.5) and float(rewards["agent_1"]) == 0.0
    assert bool(info["terminated"]) and bool(dones["__all__"]) and not bool(info["truncated"])


def test_simultaneous_pickup_splits_each_agents_value(gems):
    env, params = gems
    state = gems_lib.GemsState(pos=jnp.array([[2, 1], [2, 3]]), gems=jnp.ones(3, bool), time=jnp.zeros((), jnp.int32))
    _, _, rewards, _, _ = env.step_env(jax.random.PRNGKey(0), state, _act(RIGHT, LEFT), params)
    assert float(rewards["agent_0"]) == pytest.approx(0.25) and float(rewards["agent_1"]) == pytest.approx(0.5)


def test_truncation_and_auto_reset(gems):
    env, _ = gems
    params = gems_lib.GemsParams(max_steps_in_episode=2)
    obs0, state = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(lambda k, s, a: env.step(k, s, a, params))
    _, state, _, dones, _ = step(jax.random.PRNGKey(1), state, _act(RIGHT, UP))
    assert not bool(dones["__all__"])
    obs, state, _, dones, info = step(jax.random.PRNGKey(2), state, _act(RIGHT, UP))
    assert bool(dones["__all__"]) and bool(info["truncated"]) and not bool(info["terminated"])
    assert int(state.time) == 0  # already the next episode
    np.testing.assert_array_equal(obs["agent_0"], obs0["agent_0"])
    assert info["final_observation"]["agent_0"][2] == 1  # agent_0 ended at (0, 2)


def test_tabular_view_matches_the_jitted_step(gems):
    env, params = gems
    game = env.tabular()
    assert game.next_state.shape == (5000, 5, 5) and game.rewards.shape == (2, 5000, 5, 5)
    key = jax.random.PRNGKey(0)
    idx = np.asarray(jax.random.randint(key, (2000,), 0, game.num_states))
    acts = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (2000, 2), 0, 5))

    @jax.jit
    @jax.vmap
    def one(i, a):
        state = env.state_from_index(i)
        _, nxt, rewards, _, info = env.step_env(key, state, _act(a[0], a[1]), params)
        return env.state_index(nxt), jnp.stack([rewards["agent_0"], rewards["agent_1"]]), info["terminated"]

    nxt, rewards, terminated = (np.asarray(x) for x in one(jnp.asarray(idx), jnp.asarray(acts)))
    live = ~game.terminal[idx]  # the tabular view makes terminal states absorbing; the env never steps them
    assert live.sum() > 1500
    table_next = game.next_state[idx, acts[:, 0], acts[:, 1]]
    np.testing.assert_array_equal(nxt[live], table_next[live])
    np.testing.assert_allclose(rewards[live], game.rewards[:, idx, acts[:, 0], acts[:, 1]].T[live], atol=1e-7)
    np.testing.assert_array_equal(terminated[live], game.terminal[table_next][live])
    assert (np.abs(rewards[live]) > 0).sum() > 10  # the sample does contain pickups
    # Index round trip, initial state, and absorbing terminal states.
    roundtrip = jax.vmap(lambda i: env.state_index(env.state_from_index(i)))(jnp.arange(game.num_states))
    np.testing.assert_array_equal(roundtrip, np.arange(game.num_states))
    _, state = env.reset(key, params)
    assert game.initial[int(env.state_index(state))] == 1.0
    term = np.flatnonzero(game.terminal)
    assert len(term) == 625 and (game.next_state[term] == term[:, None, None]).all() and (game.rewards[:, term] == 0).all()


def test_dense_transition_tensor_on_a_small_layout():
    env, _ = ma.make("multiagent/gems", size=2, start_cells=((0, 0), (1, 1)), gem_cells=((0, 1),),
                     gem_values=((1.0,), (0.5,)))
    game = env.tabular()
    P = game.transition_tensor()
    assert P.shape == (32, 5, 5, 32)
    np.testing.assert_allclose(P.sum(-1), 1.0)
    np.testing.assert_array_equal(P.argmax(-1), game.next_state)
    big, _ = ma.make("multiagent/gems")
    with pytest.raises(ConfigError, match="too many"):
        big.tabular().transition_tensor()


def test_bad_actions_and_layouts_name_the_field(gems):
    env, params = gems
    _, state = env.reset(jax.random.PRNGKey(0), params)
    with pytest.raises(ConfigError, match=r"missing \['agent_1'\], unknown \['agent_2'\]"):
        env.step(jax.random.PRNGKey(0), state, {"agent_0": 0, "agent_2": 1}, params)
    with pytest.raises(ConfigError, match="must be a dict"):
        env.step(jax.random.PRNGKey(0), state, jnp.array([0, 1]), params)
    with pytest.raises(ConfigError, match=r"gem_values: expected shape \(num_agents, num_gems\) = \(2, 3\)"):
        ma.make("multiagent/gems", gem_values=((1.0, 0.5),))
    with pytest.raises(ConfigError, match="gem_cells: every cell must lie in"):
        ma.make("multiagent/gems", gem_cells=((0, 5),), gem_values=((1.0,), (1.0,)))
    with pytest.raises(ConfigError, match="unknown argument"):
        ma.make("multiagent/gems", grid=4)
    with pytest.raises(KeyError, match="Did you mean: multiagent/gems"):
        ma.make("multiagent/gem")


def test_jaxmarl_mpe_adapter_steps_under_jit():
    pytest.importorskip("jaxmarl")
    env, params = ma.make("jaxmarl/MPE_simple_spread_v3")
    # JaxMARL's MPE checks its step limit (25) before counting the step: episodes last 26 steps.
    assert env.agents == ("agent_0", "agent_1", "agent_2") and params.max_steps_in_episode == 26
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    assert obs["agent_0"].shape == env.observation_space("agent_0").shape == (18,)
    step = jax.jit(lambda k, s, a: env.step(k, s, a, params))
    actions = {a: jnp.asarray(1) for a in env.agents}
    for t in range(26):
        obs, state, rewards, dones, info = step(jax.random.fold_in(key, t), state, actions)
        assert bool(dones["__all__"]) == (t == 25)
    # The last step hits the limit: a truncation, auto-reset, and the final observation kept.
    assert bool(dones["__all__"]) and bool(info["truncated"]) and not bool(info["terminated"])
    assert set(rewards) == set(env.agents) and np.isfinite(float(rewards["agent_0"]))
    assert not np.allclose(info["final_observation"]["agent_0"], obs["agent_0"])
    with pytest.raises(ConfigError, match=r"unknown \['agent_9'\]"):
        env.step(key, state, {"agent_0": 0, "agent_1": 0, "agent_9": 0}, params)
    with pytest.raises(ConfigError, match="unknown agent 'agent_7'"):
        env.action_space("agent_7")
    with pytest.raises(ConfigError, match="unknown environment 'MPE_simple_sprad_v3'"):
        ma.make("jaxmarl/MPE_simple_sprad_v3")


def test_making_a_jaxmarl_env_keeps_the_callers_stdout_and_stderr():
    # `import jaxmarl` (0.2.0) sets sys.stdout/stderr to sys.__stdout__/__stderr__, which detaches a
    # notebook's output capture; a fresh process, because jaxmarl imports once per process.
    pytest.importorskip("jaxmarl")
    code = (
        "import io, sys\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "sys.stdout, sys.stderr = out, err\n"
        "import envs.multiagent as ma\n"
        "ma.make('jaxmarl/MPE_simple_spread_v3')\n"
        "print('after make')\n"
        "kept = sys.stdout is out and sys.stderr is err\n"
        "sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__\n"
        "print('KEPT' if kept and 'after make' in out.getvalue() else 'LOST')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "KEPT", result.stdout[-2000:]
