"""PPO and SAC training throughput beside Rejax's, same settings, one process.

    python -m experiments.benchmarks.vs_rejax --out runs/bench/vs_rejax.json     # or: make bench-rejax
    python -m experiments.benchmarks.vs_rejax --quick                           # smoke test, seconds
    python -m experiments.benchmarks.vs_rejax --only PPO --ppo-seeds 256        # on a GPU: issue 3's 256 seeds

Rejax (Liesen et al., 2024; ``rejax==0.1.3``, in ``requirements.lock``) is a PureJaxRL-style library whose
whole training run is one jit-compiled function, as here; it is the closest same-process baseline on PyPI
(PureJaxRL and Stoix are not packaged). For each case both libraries train the same number of seeds
(``jax.vmap``) for the same env steps with the same settings; compile time (ahead-of-time
``lower().compile()``) is reported apart from run time (best of ``--repeats`` calls), and the figure is
``rljax steps/s / rejax steps/s``.

The cases:

* PPO on gymnax CartPole-v1 at PureJaxRL's defaults (4 envs x 128 steps, 4 epochs x 4 minibatches,
  64x64 tanh, lr 2.5e-4, clip 0.2, entropy 0.01, value 0.5, grad norm 0.5), 1 and 8 seeds
  (``--ppo-seeds``: other counts).
* SAC on gymnax Pendulum-v1 at this library's preset (1 env, one gradient step per env step, batch 256,
  256x256 ReLU, two critics, lr 3e-4, tau 0.005, 1000 warm-up steps) for 1e4 env steps, 1 and 4 seeds.

What still differs, by design of each library (so the ratio is of the two libraries, not of one program):
rljax's PPO decays the learning rate linearly (PureJaxRL's ``ANNEAL_LR``), Rejax's keeps it constant; Rejax's
PPO has separate actor and critic optimisers; rljax bootstraps through truncations from the final
observation and records per-update metrics; Rejax's SAC keeps ``log alpha`` and both critics in its own
train states. Rejax's in-training evaluation is replaced by a no-op while timed; afterwards each library's
own evaluation reports the final return (rljax: greedy actions, ``eval_episodes`` episodes per seed;
Rejax: sampled actions, 128 episodes per seed), a check that both trained, not a comparison of returns.

gymnax >= 1.0 steps return ``(obs, state, reward, terminated, truncated, info)``; Rejax 0.1.3 was written
for the older 5-tuple with one ``done``, so ``_FiveTupleEnv`` hands it ``terminated or truncated`` (what
the older gymnax returned).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.throughput import case_parser, compare_libraries, timed_output
from rljax.agents import ppo, sac
from rljax.core.config import broadcast_hparams


class _FiveTupleEnv:
    """A gymnax >= 1.0 env seen through gymnax 0.0.x's step signature (Rejax 0.1.3 unpacks five values)."""

    def __init__(self, env):
        self._env = env

    def __getattr__(self, name):
        if name == "_env" or name.startswith("__"):  # copy.deepcopy probes these before __init__ ran
            raise AttributeError(name)
        return getattr(self._env, name)

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        return obs, state, reward, jnp.logical_or(terminated, truncated), info


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    algorithm: str  # "ppo" | "sac"
    env: str  # gymnax id
    seeds: int
    total_timesteps: int


PPO_SEEDS = (1, 8)  # seed counts of the PPO cases unless --ppo-seeds says otherwise


def cases(quick: bool, ppo_seeds=PPO_SEEDS) -> list[Case]:
    ppo_steps = 4 * 128 * (2 if quick else 976)  # whole updates: 976 x 512 = 499,712 (PureJaxRL's 5e5)
    sac_steps = 1_200 if quick else 10_000  # 9,000 gradient steps: a seed is about a minute on one CPU core
    return [
        *(Case(f"PPO gymnax/CartPole-v1, PureJaxRL defaults, {n} seed{'s' * (n > 1)}", "ppo", "CartPole-v1", n, ppo_steps)
          for n in ppo_seeds),
        Case("SAC gymnax/Pendulum-v1, 1 seed", "sac", "Pendulum-v1", 1, sac_steps),
        Case("SAC gymnax/Pendulum-v1, 4 seeds", "sac", "Pendulum-v1", 4, sac_steps),
    ]


# --- rljax -------------------------------------------------------------------------------------------

def rljax_trainer(case: Case):
    if case.algorithm == "ppo":
        config, hparams = ppo.PRESETS["gymnax/CartPole-v1"]
        return ppo.make_train(dataclasses.replace(config, total_timesteps=case.total_timesteps)), hparams
    config, hparams = sac.PRESETS["gymnax/Pendulum-v1"]
    return sac.make_train(dataclasses.replace(config, total_timesteps=case.total_timesteps)), hparams


def run_rljax(case: Case, repeats: int) -> dict:
    trainer, hparams = rljax_trainer(case)
    hparams = broadcast_hparams(hparams, case.seeds)

    def train(key):
        return jax.vmap(trainer)(jax.random.split(key, case.seeds), hparams)[0]

    compile_s, run_s, states = timed_output(train, jax.random.PRNGKey(0), repeats=repeats)
    returns = jax.jit(jax.vmap(trainer.evaluate))(states, jax.random.split(jax.random.PRNGKey(1), case.seeds))
    return _report(trainer.total_env_steps * case.seeds, compile_s, run_s, returns["return"])


# --- Rejax -------------------------------------------------------------------------------------------

def rejax_algorithm(case: Case):
    from rejax import PPO, SAC  # imported here: the module's other users need not load it

    env, env_params = gymnax.make(case.env)
    common = dict(env=_FiveTupleEnv(env), env_params=env_params, total_timesteps=case.total_timesteps,
                  eval_freq=case.total_timesteps, skip_initial_evaluation=True)
    if case.algorithm == "ppo":
        config, hparams = ppo.PRESETS["gymnax/CartPole-v1"]
        return PPO.create(
            **common, gamma=hparams.gamma, num_envs=config.num_envs, num_steps=config.num_steps,
            num_epochs=config.update_epochs, num_minibatches=config.num_minibatches, learning_rate=hparams.learning_rate,
            max_grad_norm=hparams.max_grad_norm, gae_lambda=hparams.gae_lambda, clip_eps=hparams.clip_eps,
            ent_coef=hparams.ent_coef, vf_coef=hparams.vf_coef,
            agent_kwargs={"activation": config.activation, "hidden_layer_sizes": config.hidden_sizes},
        )
    config, hparams = sac.PRESETS["gymnax/Pendulum-v1"]
    return SAC.create(
        **common, gamma=hparams.gamma, num_envs=config.num_envs, fill_buffer=config.learning_starts,
        num_epochs=config.gradient_steps,  # gradient steps per iteration of num_envs env steps (steps_per_update 1)
        buffer_size=config.buffer_size, batch_size=config.batch_size, learning_rate=hparams.actor_lr,
        polyak=1.0 - hparams.tau, num_critics=config.num_q, hidden_layer_sizes=config.hidden_sizes,
    )


def run_rejax(case: Case, repeats: int) -> dict:
    algo = rejax_algorithm(case)
    evaluate: Callable = algo.eval_callback  # Rejax's own: 128 episodes of sampled actions
    timed_algo = algo.replace(eval_callback=lambda algo, ts, key: jnp.zeros(()))

    def train(key):
        return jax.vmap(timed_algo.train)(jax.random.split(key, case.seeds))[0]

    compile_s, run_s, states = timed_output(train, jax.random.PRNGKey(0), repeats=repeats)
    keys = jax.random.split(jax.random.PRNGKey(1), case.seeds)
    _, returns = jax.jit(jax.vmap(lambda ts, key: evaluate(algo, ts, key)))(states, keys)
    return _report(case.total_timesteps * case.seeds, compile_s, run_s, returns)


def _report(env_steps: int, compile_s: float, run_s: float, returns) -> dict:
    per_seed = np.asarray(returns, dtype=float).reshape(len(returns), -1).mean(axis=1)
    return {"env_steps": env_steps, "compile_seconds": compile_s, "run_seconds": run_s,
            "env_steps_per_second": env_steps / run_s, "final_return": float(per_seed.mean()),
            "final_return_per_seed": per_seed.tolist()}


def main(argv=None) -> dict:
    parser = case_parser(__doc__.splitlines()[0], "runs/bench/vs_rejax.json")
    parser.add_argument("--ppo-seeds", type=int, nargs="+", default=list(PPO_SEEDS), help="seed counts of the PPO cases")
    args = parser.parse_args(argv)
    return compare_libraries(
        "vs_rejax", "rejax", cases(args.quick, args.ppo_seeds), args,
        run_rljax=lambda case: run_rljax(case, args.repeats),
        run_baseline=lambda case: run_rejax(case, args.repeats),
        describe=lambda case: {"algorithm": case.algorithm, "env": f"gymnax/{case.env}", "seeds": case.seeds},
    )


if __name__ == "__main__":
    main()
