import os

import gymnax
import jax
import pytest

import envs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_envs_resolves_to_this_repository():
    # A PyPI package called "envs" exists; ours must win.
    assert os.path.dirname(os.path.abspath(envs.__file__)) == os.path.join(ROOT, "envs")


def test_every_gymnax_env_is_registered():
    for env_id in gymnax.registered_envs:
        assert f"gymnax/{env_id}" in envs.names()


def test_names_by_family():
    probes = envs.names("probe")
    assert "probe/constant-reward" in probes and all(n.startswith("probe/") for n in probes)
    assert "brax/halfcheetah" in envs.names("brax")


def test_unknown_env_lists_close_names():
    with pytest.raises(KeyError) as e:
        envs.make("gymnax/CartPole-v0")
    assert "gymnax/CartPole-v1" in str(e.value)
    with pytest.raises(KeyError) as e:
        envs.make("CartPole-v1")
    assert "gymnax/CartPole-v1" in str(e.value)


def test_gymnax_params_override_and_unknown_field():
    env, params = envs.make("gymnax/CartPole-v1", max_steps_in_episode=7)
    assert params.max_steps_in_episode == 7
    with pytest.raises(TypeError, match="max_steps"):
        envs.make("gymnax/CartPole-v1", max_step=7)


def test_register_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        envs.register("probe/constant-reward", lambda: None)
    with pytest.raises(ValueError, match="family/Id"):
        envs.register("noslash", lambda: None)


@pytest.mark.parametrize("name", ["gymnax/CartPole-v1", "gymnax/Pendulum-v1", "gymnax/Breakout-MinAtar"])
def test_gymnax_contract(name):
    env, params = envs.make(name)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    assert obs.shape == envs.observation_shape(env, params)
    action = env.action_space(params).sample(key)
    out = env.step(key, state, action, params)
    assert len(out) == 6
    obs2, _, reward, terminated, truncated, info = out
    assert obs2.shape == obs.shape and reward.shape == () and terminated.dtype == bool and truncated.dtype == bool
    assert info["final_observation"].shape == obs.shape
