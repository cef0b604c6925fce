"""lrexp: configurable, tracked linear-regression training (Hydra, JAX/Optax, MLflow)."""

import jax

# Data and the least-squares reference are float64; training runs in the configured dtype, cast
# explicitly. Without x64, JAX silently turns float64 arrays into float32.
jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
