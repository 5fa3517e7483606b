"""Offline data on the device: conversion from a Dataset (action mapping, checks) and sampling."""

import dataclasses

import jax
import numpy as np
import pytest

import envs
from rljax.core import dataset as ds
from rljax.core import offline


def pendulum_dataset(n=10):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    return ds.Dataset(
        obs=obs[:-1], action=rng.uniform(-2, 2, size=(n, 1)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32), next_obs=obs[1:], terminated=np.zeros(n, bool),
        truncated=np.eye(n, dtype=bool)[-1], episode_id=np.zeros(n, np.int32), metadata={},
    )


def test_continuous_actions_are_mapped_onto_the_unit_box():
    env, params = envs.make("gymnax/Pendulum-v1")
    data = pendulum_dataset()
    t = offline.from_dataset(data, env, params)
    np.testing.assert_allclose(t.action, data.action / 2.0, atol=1e-6)  # Pendulum's box is [-2, 2]
    assert t.size == 10 and t.terminated.dtype == bool and not t.terminated.any()  # truncation is not terminal
    np.testing.assert_array_equal(offline.episode_starts(data), [0])


def test_sampling_draws_rows_of_the_data():
    env, params = envs.make("gymnax/Pendulum-v1")
    t = offline.from_dataset(pendulum_dataset(), env, params)
    batch = offline.sample(t, jax.random.PRNGKey(0), 64)
    assert batch.obs.shape == (64, 3) and batch.action.shape == (64, 1)
    rows = {tuple(np.round(r, 5)) for r in np.asarray(t.obs)}
    assert all(tuple(np.round(r, 5)) in rows for r in np.asarray(batch.obs))
    # obs and next_obs stay paired.
    index = [int(np.flatnonzero((np.asarray(t.obs) == r).all(axis=1))[0]) for r in np.asarray(batch.obs)]
    np.testing.assert_array_equal(np.asarray(batch.next_obs), np.asarray(t.next_obs)[index])


def test_mismatched_or_vector_reward_data_is_refused():
    cartpole, cartpole_params = envs.make("gymnax/CartPole-v1")
    with pytest.raises(ds.DatasetError, match="field 'obs' has rows of shape \\(3,\\), the env expects \\(4,\\)"):
        offline.from_dataset(pendulum_dataset(), cartpole, cartpole_params)
    env, params = envs.make("gymnax/Pendulum-v1")
    vector = dataclasses.replace(pendulum_dataset(), reward=np.zeros((10, 2), np.float32))
    with pytest.raises(ds.DatasetError, match="field 'reward' has shape \\(10, 2\\)"):
        offline.from_dataset(vector, env, params)
