"""Meta-training throughput (JSON out): one OpenES generation of LPO lifetimes against one lifetime alone.

    python -m experiments.benchmarks.meta_es --out runs/bench/meta_es.json              # CPU: CartPole, population 32
    python -m experiments.benchmarks.meta_es --case minatar --out runs/bench/meta_es_gpu.json   # GPU: Breakout, 64
    python -m experiments.benchmarks.meta_es --quick --out /tmp/meta_es.json            # smoke test

For each case, in one process: the compile and best run time of ONE inner LPO
lifetime (``lpo.lifetime_fitness``: full PPO-with-drift training, then evaluation)
and of ONE meta-generation (ask, the whole population's lifetimes vmapped, tell:
``es.make_generation``). Env-steps/s counts training steps only (evaluation
episodes are extra work in both); ``population_speedup`` is the generation's
env-steps/s over the single lifetime's.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax

from experiments.benchmarks.throughput import timed, write_report
from experiments.talpo import PRESETS
from rljax.agents import lpo
from rljax.core import es
from rljax.core.config import to_dict

CASES = {"cartpole": 32, "minatar": 64}  # preset -> population
LIFETIME_UPDATES = {"cartpole": 40, "minatar": 20}  # short lifetimes: the throughput does not depend on N


def measure(preset: str, population: int, updates: int, repeats: int, quick: bool) -> dict:
    config = lpo.LPOConfig(ppo=PRESETS[preset].ppo, temporal=True).with_horizon(updates)
    if quick:
        config = lpo.LPOConfig(ppo=dataclasses.replace(config.ppo, num_envs=4, num_steps=8, num_minibatches=2,
                                                       total_timesteps=4 * 8 * 2, eval_episodes=2), temporal=True)
    hp = lpo.LPOHParams(**to_dict(PRESETS[preset].hparams))
    fitness = lpo.lifetime_fitness(config)
    member = lambda drift, key: fitness(drift, key, hp)  # noqa: E731
    init = lpo.init_drift(jax.random.PRNGKey(0), config)
    steps = config.ppo.num_updates * config.ppo.num_envs * config.ppo.num_steps

    single_compile, single_run = timed(member, init, jax.random.PRNGKey(1), repeats=repeats)
    es_config = es.ESConfig(population_size=population)
    strategy = es.make_strategy(es_config, init)
    state = strategy.init(jax.random.PRNGKey(2), init, strategy.default_params)
    generation = es.make_generation(member, strategy, es_config)
    gen_compile, gen_run = timed(generation, state, jax.random.PRNGKey(3), repeats=repeats)
    single_sps = steps / single_run
    population_sps = population * steps / gen_run
    return {
        "env": config.ppo.env, "population": population, "lifetime_updates": config.ppo.num_updates,
        "env_steps_per_lifetime": steps,
        "single_lifetime": {"compile_s": single_compile, "run_s": single_run, "env_steps_per_s": single_sps},
        "generation": {"compile_s": gen_compile, "run_s": gen_run, "env_steps_per_s": population_sps},
        "population_speedup": population_sps / single_sps,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/meta_es.json")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: cartpole")
    parser.add_argument("--population", type=int, help="override the case's population")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    results = {}
    for case in args.case or ["cartpole"]:
        population = args.population or (4 if args.quick else CASES[case])
        results[case] = measure(case, population, LIFETIME_UPDATES[case], args.repeats, args.quick)
        r = results[case]
        print(f"{case}: generation of {population} in {r['generation']['run_s']:.2f} s "
              f"({r['generation']['env_steps_per_s']:.3g} env-steps/s, compile {r['generation']['compile_s']:.1f} s); "
              f"one lifetime {r['single_lifetime']['env_steps_per_s']:.3g} env-steps/s; "
              f"population speed-up {r['population_speedup']:.1f}x")
    return write_report("meta_es", args.quick, results, args.out)


if __name__ == "__main__":
    main()
