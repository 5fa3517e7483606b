"""rljax: objectives for reinforcement learning and preference learning, in JAX.

Library layout (see README, "Architecture"):

    rljax.core     rollouts, returns, networks, configs, the host loop, checkpoints
    rljax.losses   pure loss functions, one module per family
    rljax.agents   one module per algorithm: ``make_train(config) -> train(key, hparams)``
"""

import os as _os

# XLA's multi-threaded Eigen pool on CPU can wedge (every worker idle, the result
# never ready) on vmapped training graphs like ours; it hung our test suite on
# jaxlib 0.10.2 (see also PyAutoFit#1530). Single-threaded Eigen costs nothing
# measurable here (the benchmarks' CartPole PPO ran at the same speed) and only
# affects CPU. Must be set before JAX creates its CPU backend; users' own
# XLA_FLAGS setting of it wins.
#
# It still wedged (main thread in BlockUntilReady, every worker idle) with that flag:
# 8 vmapped CartPole PPO runs of 2e5 steps as one jitted call hung within 1-4 calls in
# 3 of 3 tries on jaxlib 0.10.2, and 20 calls in a row ran through (same results, and
# 7-10 s per call instead of 12 s) once XLA's concurrency-optimized thunk scheduler was
# off. Same rule: a user's own setting of either flag wins.
_CPU_FLAGS = {"xla_cpu_multi_thread_eigen": "false", "xla_cpu_enable_concurrency_optimized_scheduler": "false"}
for _flag, _value in _CPU_FLAGS.items():
    if _flag not in _os.environ.get("XLA_FLAGS", ""):
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()

__version__ = "0.1.0"
