"""Language models: a Flax decoder, heads, sampling, tokenizers, checkpoint import, preference data, trainers."""
