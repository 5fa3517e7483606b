"""Offline DPO family (sigmoid, ipo, hinge, robust, sft = RPO) on preference JSONL (TRL's trl dpo); see experiments.lm_training."""

from experiments import lm_training

DESCRIPTION = "Offline DPO family (sigmoid, ipo, hinge, robust, sft = RPO) on preference JSONL (TRL's trl dpo)"


def add_arguments(parser):
    lm_training.add_arguments(parser, "dpo")


def main(args):
    return lm_training.run("dpo", args)
