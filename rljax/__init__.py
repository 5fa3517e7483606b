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
if "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

__version__ = "0.1.0"
