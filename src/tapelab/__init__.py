"""tapelab: optimisation experiments with tf.GradientTape, configured by Hydra."""

import os

__version__ = "0.1.0"

# XLA on x86 CPUs would fuse a*b + c into one FMA instruction, which rounds once instead of twice, so an
# XLA-compiled run would drift from the plain graph (and from the seeds' printed numbers) by an ulp now and
# then. Capping XLA's instruction set at AVX leaves FMA out; it must be set before TensorFlow starts XLA.
if "xla_cpu_max_isa" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX").strip()
