"""SAC on any continuous-action env, many seeds in one compiled program (see experiments.training)."""

from experiments import training
from rljax.agents import sac

DESCRIPTION = "SAC (continuous actions, twin Q, automatic temperature), vmapped over seeds"


def add_arguments(parser):
    training.add_arguments(parser, "sac", default_env="gymnax/Pendulum-v1", default_seeds=4)


def main(args):
    return training.run("sac", sac, args)
