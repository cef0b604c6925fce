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

# Libraries whose chatter is kept off the console: JAX's probe for a TPU ("Unable to initialize
# backend 'tpu' … libtpu.so", logged where no TPU is installed: most machines), MLflow's table
# set-up and its model checks, Optuna's "A new study created in memory".
NOISY_LOGGERS = {
    "jax._src.xla_bridge": "ERROR",
    "matplotlib": "WARNING",
    "mlflow.store.db.utils": "WARNING",
    "alembic": "WARNING",
    "mlflow.pyfunc": "WARNING",
    "mlflow.models": "WARNING",
    "optuna": "WARNING",
}

# MLflow prints "🏃 View run … at: http://…" and "🧪 View experiment at: …" whenever a run on a
# tracking server ends: once per job of a sweep. lrexp prints its own link once, in its summary.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


# Launchers that log each job as they start it ("#3 : optimizer=adam …"): lrexp prints one line
# per job as it ends, with its result; their other lines ("Launching 27 jobs locally") stay.
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    "hydra_plugins.lrexp_launcher.vmap_launcher",
)


def _not_a_job_line(record) -> bool:
    return not str(record.msg).startswith("\t#")


def quiet_libraries() -> None:
    """Keep the libraries' chatter off the console (training, tracking and worker processes).

    Levels set on the loggers themselves, not handlers: Hydra's logging set-up keeps existing
    loggers (``disable_existing_loggers: false``), so this holds before and after it runs. Called
    when lrexp is imported, so before JAX initializes its backends in any process that imports
    lrexp (joblib's and submitit's workers unpickle lrexp's task function, importing it first).
    """
    import logging

    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        if _not_a_job_line not in logger.filters:
            logger.addFilter(_not_a_job_line)


quiet_libraries()
