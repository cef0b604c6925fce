"""lrexp: configurable, tracked linear-regression training (Hydra, JAX/Optax, MLflow)."""

import os
import sys

# Data and the least-squares reference are float64; training runs in the configured dtype, cast
# explicitly. Without x64, JAX silently turns float64 arrays into float32. JAX reads
# JAX_ENABLE_X64 when it is imported: setting it, rather than importing JAX here, keeps modules
# that need no JAX (the tracking process, ``lrexp.tracking.server``) free of its import.
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
else:
    os.environ["JAX_ENABLE_X64"] = "1"

__version__ = "0.1.0"

# Libraries whose INFO chatter (JAX's TPU probe, MLflow's table set-up) is kept off the console.
NOISY_LOGGERS = (
    "jax._src.xla_bridge",
    "matplotlib",
    "mlflow.store.db.utils",
    "alembic",
    "mlflow.pyfunc",
    "mlflow.models",
)


def quiet_libraries() -> None:
    """Keep the libraries' INFO chatter off the console (training and tracking processes alike)."""
    import logging

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
