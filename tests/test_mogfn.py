"""Multi-Objective GFlowNets: the hypergrid, its objectives, exact DP distributions, trajectory balance."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.mo import hypergrid
from rljax.agents import mogfn
from rljax.core.config import ConfigError, broadcast_hparams


# ---------------------------------------------------------------- the hypergrid


def test_transitions_stop_and_edge_termination():
    env, _ = hypergrid.make(side=4)
    pos = jnp.array([1, 2], jnp.int32)
    nxt, done = env.transition(pos, 0)
    assert nxt.tolist() == [2, 2] and not bool(done)
    nxt, done = env.transition(pos, 1)  # reaches the edge (H - 1 = 3): forced terminal
    assert nxt.tolist() == [1, 3] and bool(done)
    nxt, done = env.transition(pos, env.stop_action)
    assert nxt.tolist() == [1, 2] and bool(done)
    assert env.num_actions == 3 and env.max_trajectory_length == 2 * 2 + 1
    # parents: after stop one; (1, 2): (0, 2) and (1, 1); (3, 1): only (2, 1), since (3, 0) is an edge state
    assert int(env.num_parents(jnp.array([1, 2]), True)) == 1
    assert int(env.num_parents(jnp.array([1, 2]), False)) == 2
    assert int(env.num_parents(jnp.array([3, 1]), False)) == 1
    assert int(env.num_parents(jnp.array([0, 2]), False)) == 1


def test_gymnax_contract_rewards_only_at_termination():
    env, params = hypergrid.make(side=4)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (8,) and state.position.tolist() == [0, 0]
    obs, state, reward, done, _ = env.step_env(jax.random.PRNGKey(0), state, 0, params)
    assert reward.shape == (3,) and not bool(done) and float(jnp.abs(reward).sum()) == 0.0
    _, _, reward, done, _ = env.step_env(jax.random.PRNGKey(0), state, 2, params)
    assert bool(done) and np.allclose(reward, env.objectives(jnp.array([1, 0])))


@pytest.mark.parametrize("ndim,side", [(2, 4), (2, 16), (3, 3), (3, 5)])
def test_terminal_enumeration_is_reachable_set(ndim, side):
    env, _ = hypergrid.make(ndim=ndim, side=side, objectives=() if ndim != 2 else ("branin", "currin", "shubert"))
    terminal = {tuple(s) for s in env.terminal_states().tolist()}
    # breadth-first search of the DAG from the origin
    seen, frontier, ends = set(), [(0,) * ndim], set()
    while frontier:
        s = frontier.pop()
        if s in seen:
            continue
        seen.add(s)
        if max(s) == side - 1:
            ends.add(s)
            continue
        ends.add(s)  # interior states end by stop
        for i in range(ndim):
            frontier.append(tuple(c + (j == i) for j, c in enumerate(s)))
    assert terminal == ends
    edge2 = sum(1 for s in env.all_states().tolist() if sum(c == side - 1 for c in s) >= 2)
    assert len(terminal) == side**ndim - edge2
    if ndim == 2:
        assert len(terminal) == side**2 - 1


def test_objectives_at_known_points():
    env, _ = hypergrid.make(side=32)
    # Branin's three global minima (value 0.397887) -> normalised 1 - 0.397887 / 308.13
    for u, v in [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)]:
        x = jnp.array([(u + 5) / 15 * 2 - 1, v / 15 * 2 - 1])
        assert float(hypergrid.branin(x)) == pytest.approx(1 - 0.397887 / 308.13, abs=1e-6)
    # Currin at (u, v) = (0.5, 0.5), textbook formula: (1 - e^-1)(2300/8 + 1900/4 + 1046 + 60)/(100/8 + 125 + 2 + 20)
    currin = (1 - math.exp(-1)) * (2300 / 8 + 1900 / 4 + 1046 + 60) / (100 / 8 + 125 + 2 + 20) / 13.77
    assert float(hypergrid.currin(jnp.array([0.0, 0.0]))) == pytest.approx(currin, rel=1e-5)
    # the script's Shubert at x = (0, 0): (sum_i i cos(10 i))^2, min-max normalised
    s = sum(i * math.cos(10 * i) for i in range(1, 6)) ** 2
    expected = (s + 12.58133095975989) / (12.85231572911876 + 12.58133095975989)
    assert float(hypergrid.shubert(jnp.array([0.0, 0.0]))) == pytest.approx(expected, rel=1e-5)
    # the grid maps corners to -1 and 1; every objective stays in about [0, 1] on the grid
    r = np.asarray(env.objectives(jnp.asarray(env.terminal_states())))
    assert r.shape == (1023, 3) and r.min() > -1e-3 and r.max() < 1.01
    assert np.allclose(env.coordinates(jnp.array([0, 31])), [-1.0, 1.0])


def test_bad_grid_settings_name_the_field():
    with pytest.raises(ConfigError, match="ndim"):
        hypergrid.make(ndim=3, side=8)
    with pytest.raises(ConfigError, match="side"):
        hypergrid.make(side=1)
    with pytest.raises(ConfigError, match="objectives"):
        hypergrid.make(objectives=("branin", "rosenbrock"))


# ---------------------------------------------------------------- exact distributions


def test_dp_terminal_distribution_of_uniform_policy_matches_monte_carlo():
    env, _ = hypergrid.make(side=5)
    uniform = lambda position, cond: jnp.zeros(position.shape[:-1] + (env.num_actions,))
    dp = np.asarray(mogfn.terminal_distribution(env, uniform, jnp.zeros((1,))))
    assert dp.shape == (24,) and dp.sum() == pytest.approx(1.0, abs=1e-6)
    n = 40_000
    traj = jax.jit(lambda k: mogfn.rollout(k, env, uniform, jnp.zeros((n, 1))))(jax.random.PRNGKey(0))
    index = {int(i): j for j, i in enumerate(np.asarray(env.state_index(env.terminal_states())))}
    counts = np.bincount([index[int(i)] for i in np.asarray(env.state_index(traj["position"]))], minlength=24)
    mc = counts / n
    assert np.abs(mc - dp).max() < 4 * np.sqrt(dp.max() / n)
    assert dp[0] == pytest.approx(1 / 3, abs=1e-6)  # stop at the origin
    assert dp[index[int(env.state_index(jnp.array([4, 0])))]] == pytest.approx((1 / 3) ** 4, abs=1e-6)


def test_trajectory_balance_by_hand_on_a_tiny_grid():
    """H = 3: (0,0) -a0-> (1,0) -a1-> (1,1) -stop-> x = (1,1), with known tabular logits."""
    env, _ = hypergrid.make(side=3)
    table = np.zeros((9, 3))
    table[env.state_index(jnp.array([0, 0]))] = [2.0, 0.0, -50.0]
    table[env.state_index(jnp.array([1, 0]))] = [-50.0, 1.0, -50.0]
    table[env.state_index(jnp.array([1, 1]))] = [-50.0, -50.0, 3.0]
    logits_fn = mogfn.tabular_logits_fn(env, table)
    traj = mogfn.rollout(jax.random.PRNGKey(1), env, logits_fn, jnp.zeros((1, 1)))
    assert traj["position"].tolist() == [[1, 1]] and int(traj["length"][0]) == 3
    log_pf = math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-50)))  # the other two steps are ~ log 1
    assert float(traj["log_pf"][0]) == pytest.approx(log_pf, abs=1e-5)
    # P_B: (1,0) has one parent; (1,1) two ((0,1), (1,0)); the stop transition one
    assert float(traj["log_pb"][0]) == pytest.approx(-math.log(2), abs=1e-6)
    config = mogfn.MOGFNConfig(side=3, beta=2.0)
    w = jnp.array([0.2, 0.3, 0.5])
    r = env.objectives(jnp.array([1, 1]))
    log_r = 2.0 * math.log(float((r * w).sum()))
    assert float(mogfn.log_reward(config, r, w, 2.0)) == pytest.approx(log_r, rel=1e-5)
    loss, aux = mogfn.trajectory_balance_loss(jnp.array([0.7]), traj["log_pf"], jnp.array([log_r]), traj["log_pb"])
    assert float(loss) == pytest.approx((0.7 + log_pf - log_r + math.log(2)) ** 2, rel=1e-4)
    assert float(aux["log_z"]) == pytest.approx(0.7)


def test_edge_transition_has_one_backward_parent():
    env, _ = hypergrid.make(side=3)
    table = np.full((9, 3), -50.0)
    table[:, 0] = 0.0  # always increment x_0: (0,0) -> (1,0) -> (2,0), forced terminal
    traj = mogfn.rollout(jax.random.PRNGKey(0), env, mogfn.tabular_logits_fn(env, table), jnp.zeros((2, 1)))
    assert traj["position"].tolist() == [[2, 0], [2, 0]] and traj["length"].tolist() == [2, 2]
    assert np.allclose(traj["log_pb"], 0.0)


def test_exact_tb_solution_has_zero_loss_and_samples_r_over_z():
    env, _ = hypergrid.make(side=5)
    reward = np.random.default_rng(0).uniform(0.05, 2.0, size=len(env.terminal_states()))
    log_z, log_pf = mogfn.exact_flows(env, reward)
    assert log_z == pytest.approx(math.log(reward.sum()), rel=1e-9)  # F(s_0) = Z
    logits_fn = mogfn.tabular_logits_fn(env, log_pf)
    dist = np.asarray(mogfn.terminal_distribution(env, logits_fn, jnp.zeros((1,))))
    assert np.allclose(dist, reward / reward.sum(), atol=1e-6)
    traj = mogfn.rollout(jax.random.PRNGKey(3), env, logits_fn, jnp.zeros((256, 1)), random_action_prob=0.1)
    index = {int(i): j for j, i in enumerate(np.asarray(env.state_index(env.terminal_states())))}
    log_r = np.log(reward[[index[int(i)] for i in np.asarray(env.state_index(traj["position"]))]])
    loss, _ = mogfn.trajectory_balance_loss(jnp.full((256,), log_z), traj["log_pf"], jnp.asarray(log_r),
                                            traj["log_pb"])
    assert float(loss) < 1e-8
    # a wrong log Z is penalised by exactly its error squared
    loss, _ = mogfn.trajectory_balance_loss(jnp.full((256,), log_z + 0.5), traj["log_pf"], jnp.asarray(log_r),
                                            traj["log_pb"])
    assert float(loss) == pytest.approx(0.25, abs=1e-4)


def test_target_distribution_is_scalarised_reward_to_the_beta():
    config = mogfn.MOGFNConfig(side=6, beta=4.0)
    env = mogfn.make_env(config)
    w = np.array([0.6, 0.3, 0.1])
    r = np.asarray(env.objectives(jnp.asarray(env.terminal_states())), np.float64)
    expected = np.maximum(r @ w, 1e-3) ** 4
    assert np.allclose(mogfn.target_distribution(config, w), expected / expected.sum())


def test_default_networks_are_the_authors_run_configuration():
    """The hypergrid runs used ``--n_layers 4 --n_hid 64`` (run_script.sh): the policy is 4 hidden
    LeakyReLU layers of 64 over [one-hot position, w, thermometer(beta)], log Z(w, beta) 4 layers of 32."""
    config = mogfn.MOGFNConfig(side=16)
    params = mogfn.init_params(config, jax.random.PRNGKey(0))
    kernels = {name: [layer["kernel"].shape for layer in params[name]["params"].values()] for name in params}
    obs, cond = 2 * 16, 3 + 50
    assert kernels["policy"] == [(obs + cond, 64), (64, 64), (64, 64), (64, 64), (64, 3)]
    assert kernels["z"] == [(cond, 32), (32, 32), (32, 32), (32, 32), (32, 1)]


def test_preference_errors_name_the_field():
    config = mogfn.MOGFNConfig(side=4, num_updates=2, batch_size=4, hidden_sizes=(8,), z_hidden_sizes=(4,))
    with pytest.raises(ConfigError, match="preference: expected 3 weights"):
        mogfn.target_distribution(config, [0.5, 0.5])
    with pytest.raises(ConfigError, match="preference: expected non-negative weights summing to 1"):
        mogfn.target_distribution(config, [0.5, 0.6, -0.1])
    with pytest.raises(ConfigError, match=r"test_preferences\[1\]"):
        mogfn.make_train(config, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    params = mogfn.init_params(config, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r"preferences\[0\]: expected 3 weights"):
        mogfn.sample_candidates(config, params, jax.random.PRNGKey(0), [[0.5, 0.5]], 2)
    with pytest.raises(ConfigError, match=r"MOGFNConfig.method: expected one of \('tb', 'reinforce'\), got 'dqn'"):
        mogfn.MOGFNConfig(method="dqn")
    with pytest.raises(ConfigError, match=r"MOGFNConfig.beta_encoding: expected one of .*, got 'onehot'"):
        mogfn.MOGFNConfig(beta_encoding="onehot")
    with pytest.raises(ConfigError, match="random_action_prob"):
        mogfn.MOGFNConfig(random_action_prob=1.5)


def test_beta_distributions_are_the_scripts():
    """Fixed beta, Gamma(2, 1) (the script's default) and U(0, 16) (its --uniform): moments of 20000 draws."""
    def betas(**kw):
        config = mogfn.MOGFNConfig(side=4, **kw)
        w, beta = mogfn.sample_conditions(config, jax.random.PRNGKey(0), 20_000)
        assert np.allclose(np.asarray(w).sum(-1), 1.0, atol=1e-5)
        return np.asarray(beta)
    assert np.all(betas(beta=5.0) == 5.0)
    gamma = betas(beta_gamma=(2.0, 1.0))
    assert gamma.mean() == pytest.approx(2.0, abs=0.04) and gamma.var() == pytest.approx(2.0, abs=0.1)
    uniform = betas(beta_uniform=(0.0, 16.0))
    assert uniform.min() >= 0 and uniform.max() < 16
    assert uniform.mean() == pytest.approx(8.0, abs=0.1) and uniform.var() == pytest.approx(256 / 12, abs=0.5)
    with pytest.raises(ConfigError, match=r"beta_uniform: expected \(low, high\) with 0 <= low < high"):
        mogfn.MOGFNConfig(beta_uniform=(16.0, 0.0))
    with pytest.raises(ConfigError, match="beta_uniform: expected None when beta_gamma is set"):
        mogfn.MOGFNConfig(beta_gamma=(2.0, 1.0), beta_uniform=(0.0, 16.0))


def test_evaluate_tests_every_preference_and_beta():
    """``l1_per_condition[b, m]`` is the exact L1 at (test_betas[b], preference m); the mean is ``l1``."""
    config = mogfn.MOGFNConfig(side=5, hidden_sizes=(8,), z_hidden_sizes=(4,), beta_gamma=(2.0, 1.0))
    prefs = [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    state = mogfn.make_train(config, prefs).init(jax.random.PRNGKey(0), mogfn.MOGFNHParams())
    out = mogfn.make_train(config, prefs, (1.0, 8.0)).evaluate(state, None)
    assert out["l1_per_condition"].shape == (2, 2)
    for b, beta in enumerate((1.0, 8.0)):
        learned = np.asarray(mogfn.learned_distributions(config, state.params, prefs, beta))
        target = np.stack([mogfn.target_distribution(config, w, beta) for w in prefs])
        assert np.allclose(out["l1_per_condition"][b], np.abs(learned - target).sum(-1), atol=1e-5)
    assert float(out["l1"]) == pytest.approx(float(np.mean(out["l1_per_condition"])))
    assert not np.allclose(out["l1_per_condition"][0], out["l1_per_condition"][1])  # beta changes the target
    with pytest.raises(ConfigError, match="test_betas: expected positive betas"):
        mogfn.make_train(config, prefs, (0.0,))


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("method", mogfn.METHODS)
def test_train_vmaps_over_seeds_and_tb_fits_a_tiny_grid(method):
    config = mogfn.MOGFNConfig(side=4, method=method, num_updates=300, batch_size=32, beta=2.0,
                               hidden_sizes=(32, 32), z_hidden_sizes=(16,))
    trainer = mogfn.make_train(config, [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    hp = broadcast_hparams(mogfn.MOGFNHParams(), 2)
    init = jax.jit(jax.vmap(trainer.init))(keys, hp)
    state, metrics = jax.jit(jax.vmap(trainer))(keys, hp)
    assert metrics["loss"].shape == (2, 300) and np.isfinite(np.asarray(metrics["loss"])).all()
    evaluate = jax.jit(jax.vmap(trainer.evaluate))
    before, after = evaluate(init, keys)["l1"], evaluate(state, keys)["l1"]
    assert not np.allclose(state.params["policy"]["params"]["Dense_0"]["kernel"][0],
                           state.params["policy"]["params"]["Dense_0"]["kernel"][1])  # seeds differ
    if method == "tb":
        assert float(after.max()) < 0.5 * float(before.min())
        assert float(np.mean(metrics["loss"][:, -20:])) < 0.1 * float(np.mean(metrics["loss"][:, :20]))


# ---------------------------------------------------------------- the experiment


@pytest.mark.integration
def test_quick_cli_writes_every_output(run_experiment):
    out, result = run_experiment("mogfn-hypergrid", "--quick", "--set", "learning_rate=3e-3",
                                 files=("metrics.jsonl", "front.png", "l1.png"))
    assert set(result["claims"]) == {"l1", "hypervolume", "diversity"}
    assert len(result["methods"]["tb"]["per_seed"]) == 2
    hparams = json.loads((out / "config.json").read_text())["hparams"]
    assert hparams["learning_rate"] == 3e-3 and hparams["z_learning_rate"] == 1e-2


def test_cli_set_rejects_an_unknown_field_naming_it(tmp_path):
    from experiments.__main__ import main as cli

    with pytest.raises(ValueError, match=r"--set lr: no such field; known fields are .*'learning_rate'"):
        cli(["mogfn-hypergrid", "--quick", "--set", "lr=1e-3", "--out", str(tmp_path / "r"), "--no-progress"])


@pytest.mark.slow
def test_full_experiment_claims(run_experiment):
    """The reproduction (16x16 grid, 3 seeds x 5000 updates per method; about 7.5 minutes on one core).
    Measured: hypervolume and diversity hold; the L1 reduction was 7.0x, short of 10x."""
    claims = run_experiment("mogfn-hypergrid")[1]["claims"]
    assert claims["hypervolume"]["holds"], claims["hypervolume"]
    assert claims["diversity"]["holds"], claims["diversity"]
    if not claims["l1"]["holds"]:
        pytest.xfail(f"exact L1 fell less than 10x: {claims['l1']}")
