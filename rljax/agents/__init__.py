"""One module per algorithm, each exposing ``make_train(config) -> Trainer``."""
