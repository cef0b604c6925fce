"""Where runs are stored: tracking URIs resolved and checked without importing MLflow."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path


def resolve_uri(uri: str, base_dir: str | Path) -> str:
    """Make a relative ``sqlite:///`` path absolute in ``base_dir`` (the launch directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(base_dir) / uri[len(prefix) :]).resolve())
    return uri


def check_server(uri: str, timeout: float = 3.0) -> str | None:
    """For an http(s) tracking URI, why no MLflow server answers there; None when one does."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    fail_fast_http()
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        return f"no MLflow server answers there ({type(e).__name__})"
    if response.status_code != 200:
        return f"the server answered /health with HTTP {response.status_code}"
    return None


def fail_fast_http() -> None:
    """Make MLflow's calls to a server fail within seconds when it does not answer: by default
    each call retries for about four minutes. (Set in every process that calls MLflow; a user's
    own settings of these variables win.)"""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def missing_store(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store that does not exist: reading must not create one."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_file():
        return Path(uri[len(prefix) :])
    return None


def analyze(uri: str) -> None:
    """Give SQLite's query planner statistics on a ``sqlite:///`` store (a sampled ``ANALYZE``).

    Without them SQLite reads one run's metric history through the index on the metric's key
    alone, scanning that metric of every run in the store: 6 ms a curve in a store of 300,000
    values, and growing with it; with them, through the index on run and key: 0.08 ms. The
    statistics stay in the file (``sqlite_stat1``); sampling keeps this call near 0.1 s.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or not Path(uri[len(prefix) :]).is_file():
        return
    with contextlib.closing(sqlite3.connect(uri[len(prefix) :], timeout=20)) as db:
        db.execute("PRAGMA analysis_limit=1000")  # rows sampled per index
        db.execute("ANALYZE")
        db.commit()
