"""Language models: a Flax decoder, heads, sampling, tokenizers, checkpoint import and export, preference data, trainers."""
