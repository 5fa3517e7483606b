"""Evaluation cost (JSON out): episodes that end early against stepping to the env's time limit, one process.

    python -m experiments.benchmarks.evaluation --out runs/bench/evaluation.json
    python -m experiments.benchmarks.evaluation --quick --out /tmp/evaluation.json   # smoke test

``rljax.core.evaluation.episode_returns`` runs scanned chunks of 32 steps and starts
no chunk once every episode has ended. The baseline in the same process is the
same function with one chunk as long as the time limit, which steps every episode
to the limit (what evaluation did before 2026-12-07). Each case evaluates an
untrained PPO actor-critic of the experiment's size, greedily, on 16 episodes: the
network of ``talpo-minatar`` (256 x 256) on Breakout-MinAtar, PureJaxRL's (64 x 64)
on CartPole, and on Pendulum, whose episodes always run to the limit, what the
chunks cost where nothing can be skipped. Compile time apart, best of --repeats
runs; the two must give the same returns and lengths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.core import max_episode_steps
from experiments.benchmarks.throughput import case_parser, selected, timed_output, write_report
from experiments.talpo import PRESETS as TALPO_PRESETS
from rljax.agents import ppo
from rljax.core.evaluation import episode_returns

CASES = {
    "Breakout-MinAtar": TALPO_PRESETS["minatar"].ppo,
    "CartPole-v1": ppo.PRESETS["gymnax/CartPole-v1"][0],
    "Pendulum-v1, every episode to the limit": ppo.preset("gymnax/Pendulum-v1")[0],  # the chunks' own cost
}
EPISODES = 16


def measure(config, episodes: int, repeats: int) -> dict:
    env, env_params = ppo.make_env(config, training=False)
    network = ppo.make_network(config, env, env_params)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + envs.observation_shape(env, env_params)))
    act = lambda obs, key: network.apply(params, obs)[0].mode()  # noqa: E731
    limit = max_episode_steps(env, env_params)
    runs = {}
    for name, chunk_steps in (("chunks", 32), ("to_the_limit", limit)):
        compile_s, run_s, out = timed_output(
            lambda key: episode_returns(env, env_params, act, key, episodes, chunk_steps), jax.random.PRNGKey(1),
            repeats=repeats)
        runs[name] = {"chunk_steps": chunk_steps, "compile_seconds": compile_s, "run_seconds": run_s,
                      "return": np.asarray(out["return"]).tolist(), "length": np.asarray(out["length"]).tolist()}
    same = all(runs["chunks"][k] == runs["to_the_limit"][k] for k in ("return", "length"))
    if not same:
        raise AssertionError(f"{config.env}: chunked evaluation differs from stepping to the limit: {runs}")
    lengths = runs["chunks"]["length"]
    return {"env": config.env, "episodes": episodes, "time_limit": limit, "hidden_sizes": list(config.hidden_sizes),
            "longest_episode": max(lengths), "mean_episode_length": float(np.mean(lengths)), **runs,
            "speedup": runs["to_the_limit"]["run_seconds"] / runs["chunks"]["run_seconds"]}


def main(argv=None) -> dict:
    args = case_parser(__doc__.splitlines()[0], "runs/bench/evaluation.json").parse_args(argv)
    results = {}
    for name, config in CASES.items():
        if not selected(name, args.only):
            continue
        r = results[name] = measure(config, 2 if args.quick else EPISODES, args.repeats)
        print(f"{name}: {r['episodes']} episodes, longest {r['longest_episode']} of {r['time_limit']} steps: "
              f"{r['chunks']['run_seconds'] * 1e3:.2f} ms in chunks vs {r['to_the_limit']['run_seconds'] * 1e3:.2f} ms "
              f"to the limit = {r['speedup']:.1f}x (compile {r['chunks']['compile_seconds']:.1f} / "
              f"{r['to_the_limit']['compile_seconds']:.1f} s)", flush=True)
    return write_report("evaluation", args.quick, results, args.out)


if __name__ == "__main__":
    main()
