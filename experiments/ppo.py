"""PPO on any registered environment, many seeds in one compiled program (see experiments.training)."""

from experiments import training
from rljax.agents import ppo

DESCRIPTION = "PPO (discrete and continuous) on any env, vmapped over seeds"


def add_arguments(parser):
    training.add_arguments(parser, "ppo", default_env="gymnax/CartPole-v1", default_seeds=8)


def main(args):
    return training.run("ppo", ppo, args)
