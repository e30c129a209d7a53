"""Studies: optimizers compared over problems, learning rates and seeds, by measures defined once."""
