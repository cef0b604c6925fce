"""Shared fixtures: real Hydra composition, a real MLflow SQLite store in a temp dir."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lrexp import config

FULL = os.environ.get("CI_FULL") == "1" or os.environ.get("LREXP_FULL_MATRIX") == "1"


def pytest_configure(config) -> None:
    """Keep JAX's compiled programs in a temp dir, not the user's ~/.cache (runs inherit it)."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="lrexp-jax-"))


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``full`` run only in CI's second pass (``CI_FULL=1 pytest -m full``)."""
    if FULL:
        return
    skip = pytest.mark.skip(reason="full run only (CI_FULL=1 python -m pytest -m full)")
    for item in items:
        if item.get_closest_marker("full"):
            item.add_marker(skip)


def compose_config(*overrides: str) -> DictConfig:
    """Compose lrexp's config exactly as the CLI does, with command-line style overrides."""
    with initialize_config_module(version_base="1.3", config_module="lrexp.conf"):
        return compose("config", overrides=list(overrides))


def typed_config(*overrides: str) -> config.Config:
    """Compose and convert to the typed dataclasses that the pipeline takes."""
    return config.to_object(compose_config(*overrides))


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the session (a new store costs about a second to create)."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{db}"


@pytest.fixture
def experiment() -> str:
    """A fresh experiment name, so each test reads back only its own runs."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tracked(store_uri, experiment):
    """Overrides that send a run to the session store, under this test's experiment."""
    return [f"tracking.uri={store_uri}", f"tracking.experiment={experiment}"]


def runs_in(store_uri: str, experiment: str) -> list:
    """Every run of ``experiment`` in the store (empty when the experiment does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.fixture
def small_csv(tmp_path) -> Path:
    """A small CSV with a header: y = 1 + 2a − 3b (+ tiny noise) and an unused column."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 80))
    y = 1.0 + 2.0 * a - 3.0 * b + 0.01 * rng.normal(size=80)
    path = tmp_path / "small.csv"
    lines = ["a,b,unused,price"] + [
        f"{x},{z},{u},{t}" for x, z, u, t in zip(a, b, c, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
