"""--gpu: the brax locomotion scale-up of the Pendulum/CartPole experiments (settings only; the runs need a GPU)."""

import argparse

import pytest

from experiments import ailboost, fdvl_vs_xql, iqlearn, mamql_brax, mamql_gems, recoil
from experiments import odice as odice_exp
from experiments.common import GPU_ENV, apply_gpu_defaults
from rljax.agents import iq_learn, odice, sac


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return args


def test_gpu_defaults_fill_only_flags_left_at_their_defaults():
    args = parse(ailboost, ["--gpu", "--env", "brax/halfcheetah", "--seeds", "2"])
    apply_gpu_defaults(args, ailboost.add_arguments, {"env": GPU_ENV, "rounds": 500, "seeds": 5, "eval_every": 25})
    assert (args.env, args.seeds, args.rounds, args.eval_every) == ("brax/halfcheetah", 2, 500, 25)
    plain = parse(ailboost, [])
    apply_gpu_defaults(plain, ailboost.add_arguments, {"env": GPU_ENV, "rounds": 500})
    assert (plain.env, plain.rounds) == ("gymnax/Pendulum-v1", 75)  # no --gpu: nothing changes
    for module in (ailboost, fdvl_vs_xql, recoil, iqlearn, odice_exp, mamql_gems):
        with pytest.raises(SystemExit):
            parse(module, ["--gpu", "--quick"])  # exclusive


def test_brax_presets_for_the_experts_and_iq_learn():
    for env in ("brax/hopper", "brax/halfcheetah"):
        config, _ = sac.preset(env)
        assert config.env == env and config.total_timesteps == 1_000_000
        assert config.num_envs * config.steps_per_update == config.gradient_steps  # one gradient step per env step
        iq_config, iq_hp = iq_learn.preset(env)
        assert iq_config.online and iq_config.env == env
        assert iq_config.num_updates * iq_config.num_envs * iq_config.steps_per_update == 1_000_000
        assert iq_config.gradient_steps == iq_config.num_envs
        assert iq_hp == iq_learn.PRESETS["gymnax/Pendulum-v1"][1]


def test_gpu_settings_of_the_offline_experiments():
    args = parse(fdvl_vs_xql, ["--gpu"])
    apply_gpu_defaults(args, fdvl_vs_xql.add_arguments, {"env": GPU_ENV, "steps": 1_000_000, "updates": 1_000_000})
    config, _ = fdvl_vs_xql.settings(args, "fdvl_chi2")
    assert (config.env, config.hidden_sizes, config.batch_size, config.num_updates) == (
        GPU_ENV, (256, 256), 1024, 1_000_000)
    args = parse(recoil, ["--gpu"])
    apply_gpu_defaults(args, recoil.add_arguments, {"env": GPU_ENV, "updates": 100_000})
    config, _ = recoil.settings(args)
    assert (config.env, config.hidden_sizes, config.num_updates * config.gradient_steps) == (
        GPU_ENV, (256, 256), 1_000_000)


def test_ailboost_gpu_learner_is_the_official_codes_sac():
    args = parse(ailboost, ["--gpu"])
    apply_gpu_defaults(args, ailboost.add_arguments, {"env": GPU_ENV, "rounds": 500})
    config, hparams = ailboost.settings(args)
    assert config.sac.hidden_sizes == (1024, 1024) and config.sac.batch_size == 1024
    assert (hparams.sac.actor_lr, hparams.sac.critic_lr) == (1e-4, 1e-4)
    assert config.sac_steps_per_round == config.episodes_per_round * 1000 // 2  # one SAC step per 2 env steps


def test_odice_gpu_settings_are_the_official_codes_on_brax_with_scaled_reset_noise():
    args = parse(odice_exp, ["--gpu"])
    odice_exp.resolve_defaults(args)
    config, hparams = odice_exp.settings(args)
    assert (config.env, config.gradient_steps, args.transitions) == (GPU_ENV, 1_000_000, 1_000_000)
    assert (config.value_hidden_sizes, config.policy_hidden_sizes, config.batch_size) == ((256, 256), (1024, 1024), 256)
    assert hparams == odice.ODICEHParams()  # the official code's lambda, eta, learning rates, tau
    assert config.ood_env_kwargs == (("reset_noise_scale", 0.05),)  # 10x hopper's 0.005
    args = parse(odice_exp, ["--gpu", "--env", "brax/halfcheetah", "--perturbation", "2"])
    odice_exp.resolve_defaults(args)
    assert odice_exp.settings(args)[0].ood_env_kwargs == (("reset_noise_scale", 0.2),)  # 2x halfcheetah's 0.1
    plain = parse(odice_exp, [])
    odice_exp.resolve_defaults(plain)
    assert odice_exp.settings(plain)[0].ood_env_kwargs == (("start_perturbation", 0.4),)  # the point mass
    with pytest.raises(SystemExit, match="reset noise"):
        odice_exp.perturbation_kwargs("brax/inverted_pendulum", 10.0)


def test_mamql_gpu_runs_continuous_mamql_on_the_multi_agent_hopper():
    args = parse(mamql_gems, ["--gpu"])
    apply_gpu_defaults(args, mamql_gems.add_arguments, {"env": mamql_brax.GPU_ENV})
    assert args.env == "jaxmarl/hopper_3x1" and mamql_brax.brax_env_of(args.env) == "brax/hopper"
    assert mamql_brax.brax_env_of("jaxmarl/halfcheetah_6x1") == "brax/halfcheetah"
    settings = mamql_brax.BraxSettings()
    assert (settings.num_demos, settings.num_updates * settings.gradient_steps, settings.expert_steps) == (
        50, 100_000, None)  # 50 demonstrations as on Gems; None: the SAC preset's 1e6 expert steps
    with pytest.raises(SystemExit, match="--env: expected multiagent/gems or jaxmarl/"):
        mamql_gems.main(parse(mamql_gems, ["--env", "brax/hopper"]))
