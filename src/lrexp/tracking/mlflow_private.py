"""MLflow's internals that lrexp relies on, one function each, isolated here.

Each is used for speed alone (the public path does the same, slower), says why, and was checked
against MLflow 3.17.2 and 3.18.0. Where an internal is gone, each falls back to the public path.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def pandas_digest(frame: pd.DataFrame) -> str:
    """MLflow's digest of a frame of numbers (``compute_pandas_digest``): a hash of its first
    rows, its length and its column names.

    Why: MLflow's own function hashes every cell through a Python pass (10 s at 2e6 rows); this is
    its equation on the first ``MAX_ROWS`` rows with pandas' vectorized hash, equal digest.
    """
    import pandas as pd
    from mlflow.data.digest_utils import compute_pandas_digest

    try:
        from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest
    except ImportError:  # moved or renamed in another MLflow: the public, slower path
        return compute_pandas_digest(frame)
    numeric = frame.select_dtypes(include=[np.number]).columns
    if len(numeric) != frame.shape[1]:
        return compute_pandas_digest(frame)
    trimmed = frame.head(MAX_ROWS)[pd.Index([]).union(numeric)]  # MLflow's column order
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(trimmed).values, np.int64(len(frame))]
        + [str(c).encode() for c in frame.columns]
    )


def set_dataset_schema(dataset: Any, frame: pd.DataFrame) -> None:
    """Give an MLflow ``PandasDataset`` the schema of a frame of float64 columns up front.

    Why: ``PandasDataset.schema`` is a cached property that infers the schema cell by cell
    (``_infer_schema``); for float64 columns it is known from the dtypes. Pre-filling the cached
    property's slot in the instance's ``__dict__`` is how ``functools.cached_property`` stores it.
    """
    from mlflow.types import ColSpec, Schema

    if not all(dtype == np.float64 for dtype in frame.dtypes):
        return  # MLflow infers it, as usual
    dataset.__dict__["schema"] = Schema(
        [
            ColSpec("double", str(c), required=not np.isnan(frame[c].to_numpy()).any())
            for c in frame.columns
        ]
    )


def assume_model_requirements(packages: tuple[str, ...]) -> None:
    """Tell MLflow's requirement check that these packages provide the modules of the same name.

    Why: ``log_model`` checks the model's requirements against a map from modules to installed
    distributions, built by reading the file list of every installed distribution (0.3 s to over
    1 s). lrexp's model needs only ``mlflow``, ``numpy`` and ``pandas``. Only in the tracking
    process, which logs lrexp's model alone; a private cache, so only its time is at stake.
    """
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        if requirements_utils._MODULES_TO_PACKAGES is None:
            requirements_utils._MODULES_TO_PACKAGES = {p: [p] for p in packages}
