"""Benchmarks: JSON out, compile time apart from run time, baselines in the same process.

* ``throughput``: PPO training next to the raw env stepping it trains on.
* ``vs_rejax``: PPO and SAC beside Rejax on the same settings (gymnax CartPole, Pendulum).
* ``vs_brax``: PPO and SAC beside brax's own trainers on the same brax envs and settings.
* ``dpo_throughput``: DPO and reward-model training beside TRL's ``DPOTrainer`` and ``RewardTrainer`` on the
  same shapes (``trl_baselines``).
* ``meta_es``: one OpenES generation of learned-objective lifetimes next to one lifetime.
* ``gpu``: the accelerator figures in one script (brax PPO and SAC, PPO CartPole over 256 seeds, 124M GPT-2
  DPO in bf16 with MFU, meta-ES on MinAtar).
"""
