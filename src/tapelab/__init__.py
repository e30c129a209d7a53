"""tapelab: optimisation experiments with tf.GradientTape, configured by Hydra."""

__version__ = "0.1.0"
