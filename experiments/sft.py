"""Supervised fine-tuning of a decoder LM on prompt/completion JSONL (TRL's trl sft); see experiments.lm_training."""

from experiments import lm_training

DESCRIPTION = "Supervised fine-tuning of a decoder LM on prompt/completion JSONL (TRL's trl sft)"


def add_arguments(parser):
    lm_training.add_arguments(parser, "sft")


def main(args):
    return lm_training.run("sft", args)
