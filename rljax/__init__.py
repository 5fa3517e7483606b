"""rljax: objectives for reinforcement learning and preference learning, in JAX.

Library layout (see README, "Architecture"):

    rljax.core     rollouts, returns, networks, configs, the host loop, checkpoints
    rljax.losses   pure loss functions, one module per family
    rljax.agents   one module per algorithm: ``make_train(config) -> train(key, hparams)``
"""

__version__ = "0.1.0"
