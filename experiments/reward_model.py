"""Bradley-Terry reward model on prompt/chosen/rejected JSONL (TRL's trl reward); see experiments.lm_training."""

from experiments import lm_training

DESCRIPTION = "Bradley-Terry reward model on prompt/chosen/rejected JSONL (TRL's trl reward)"


def add_arguments(parser):
    lm_training.add_arguments(parser, "reward-model")


def main(args):
    return lm_training.run("reward-model", args)
