"""Pure loss functions, one module per family: ``loss(params, batch, hp, ...) -> (scalar, aux)``."""
