"""Paper reproductions and benchmarks: ``python -m experiments NAME [--flags]``.

Each experiment module defines ``DESCRIPTION``, ``add_arguments(parser)`` and
``main(args) -> dict`` (the result it wrote to ``result.json``). One module can
serve several names through presets: ``"module:preset"`` entries call the
module's ``variant(preset)``, which returns those three with the preset's defaults.
"""

import importlib

# name -> module; one module per reproduction.
EXPERIMENTS = {
    "ppo": "experiments.ppo",
    "sac": "experiments.sac",
    "make-dataset": "experiments.make_dataset",
    "make-demos": "experiments.make_demos",
    "ailboost": "experiments.ailboost",
    "rpo-vs-dpo": "experiments.rpo_vs_dpo",
    "likelihood-displacement": "experiments.likelihood_displacement",
    "reversal-curse": "experiments.reversal_curse",
    "sft": "experiments.sft",
    "reward-model": "experiments.reward_model",
    "reward-ensembles": "experiments.reward_ensembles",
    "unlearning-uld": "experiments.unlearning_uld",
    "noisy-verifier": "experiments.noisy_verifier",
    "f-dpg": "experiments.f_dpg",
    "kl-posterior": "experiments.kl_posterior",
    "lsc-rewards": "experiments.lsc_rewards",
    "on-policy-preference": "experiments.on_policy_preference",
    "dno": "experiments.dno",
    "dpa": "experiments.dpa",
    "dpo": "experiments.dpo",
    "mogfn-hypergrid": "experiments.mogfn_hypergrid",
    "odice": "experiments.odice",
    "recoil": "experiments.recoil",
    "fdvl-vs-xql": "experiments.fdvl_vs_xql",
    "cmorl-dst": "experiments.cmorl_dst",
    "cmorl-mujoco": "experiments.cmorl_mujoco",
    "mamql-gems": "experiments.mamql_gems",
    "iqlearn": "experiments.iqlearn",
    "mdpo-cartpole": "experiments.mdpo_cartpole",
    "regret-preferences": "experiments.regret_preferences",
    "irl-misspecification": "experiments.irl_misspecification",
    "expressivity": "experiments.expressivity",
    "parl-tabular": "experiments.parl_tabular",
    "mmds-kuhn": "experiments.mmds_kuhn",
    "mds-common-payoff": "experiments.mds_common_payoff",
    "alignment-ceiling": "experiments.alignment_ceiling",
    "talpo-cartpole": "experiments.talpo:cartpole",
    "talpo-minatar": "experiments.talpo:minatar",
    "talpo-brax": "experiments.talpo:brax",
}


def load(name: str):
    """The experiment module, or for ``"module:preset"`` entries the module's ``variant(preset)``."""
    module, _, preset = EXPERIMENTS[name].partition(":")
    module = importlib.import_module(module)
    return module.variant(preset) if preset else module
