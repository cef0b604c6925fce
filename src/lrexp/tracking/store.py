"""Where runs are stored: tracking URIs resolved and checked without importing MLflow.

:func:`problem` and :func:`experiment_problem` say in a line what is wrong with a tracking URI or
an experiment before anything trains (stdlib, sqlite3 and sockets only: the training process
never imports MLflow); :func:`creating` is the lock under which a SQLite store is created or
upgraded; :func:`end_directly` is the last resort that ends a run when MLflow cannot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

SQLITE = "sqlite:///"
ALLOWED = "sqlite:///path/to/mlflow.db, http(s)://host:port, postgresql+driver://…, mysql://…"
MAX_EXPERIMENT_NAME = 500  # MLflow's limit (mlflow.utils.validation)
# SQLAlchemy's default driver for each database MLflow stores runs in, and its port
DRIVERS = {"postgresql": "psycopg2", "mysql": "MySQLdb", "mssql": "pyodbc"}
PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
CONNECT_S = 3.0  # how long a database or server may take to accept a connection


class StoreError(RuntimeError):
    """The store cannot be used as it is (half-migrated, not a database); the message says how
    to repair it."""


def resolve_uri(uri: str, base_dir: str | Path) -> str:
    """Make a relative ``sqlite:///`` path absolute in ``base_dir`` (the launch directory)."""
    if uri.startswith(SQLITE) and uri[len(SQLITE) :] and not uri.startswith(SQLITE + "/"):
        return SQLITE + str((Path(base_dir) / uri[len(SQLITE) :]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (None for other stores)."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) and uri[len(SQLITE) :] else None


# --- checks made before a run exists --------------------------------------------------------------
def problem(uri: str) -> str | None:
    """Why runs cannot be stored at ``uri`` (resolved), in a line; None when they can."""
    scheme = urlsplit(uri).scheme.split("+")[0].lower() if "://" in uri else ""
    if uri.startswith("sqlite:"):
        return _sqlite_problem(uri)
    if scheme in ("http", "https"):
        return check_server(uri)
    if scheme in DRIVERS:
        return _database_problem(uri, scheme)
    if scheme == "file" or (not scheme and uri not in ("databricks", "databricks-uc", "uc")):
        what = "a file store (MLflow 3 refuses it)" if scheme == "file" else "no scheme"
        return f"{what}; allowed: {ALLOWED} (e.g. sqlite:///mlflow.db)"
    return f"lrexp does not store runs in {uri.split(':')[0]!r} stores; allowed: {ALLOWED}"


def _sqlite_problem(uri: str) -> str | None:
    path = sqlite_path(uri)
    if path is None or not uri.startswith(SQLITE) or path.is_dir():
        return f"no database file named; allowed: {SQLITE}path/to/mlflow.db"
    if not path.parent.is_dir():
        return f"the directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the directory {path.parent} is not writable (SQLite writes a journal beside it)"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not writable"
    try:
        damaged(path)
    except StoreError as e:
        return str(e)
    return None


def damaged(path: Path) -> None:
    """Raise :class:`StoreError` (saying how to repair it) if the SQLite file at ``path`` is no
    database, or was left half-migrated (an upgrade that stopped part-way)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    except sqlite3.DatabaseError as e:
        if not any(m in str(e) for m in ("not a database", "malformed")):
            return  # busy, or a journal to roll back first (a killed writer): SQLite copes
        raise StoreError(
            f"{path} is not a usable SQLite database ({e}); move it aside and rerun "
            "(a new store is made), or restore it from a backup"
        ) from None
    half = [n for n in names if n.startswith("_alembic_tmp_")]
    if half:
        drops = "; ".join(f"DROP TABLE {n}" for n in half)
        raise StoreError(
            f"{path} was left half-migrated by an interrupted upgrade (table {half[0]}); "
            f"repair it with: python -m lrexp.runs repair --uri {SQLITE}{path}  "
            f"(or: sqlite3 {path} '{drops}'), then rerun"
        )


def _database_problem(uri: str, scheme: str) -> str | None:
    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[2] or DRIVERS[scheme]
    module = {"psycopg": "psycopg", "pymysql": "pymysql", "mysqldb": "MySQLdb"}.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        return f"SQLAlchemy's driver {driver!r} for {scheme} is not installed"
    return reachable(parts.hostname or "localhost", parts.port or PORTS[scheme])


def reachable(host: str, port: int, timeout: float = CONNECT_S) -> str | None:
    """Why nothing accepts a TCP connection at ``host:port`` within ``timeout``; None if it does."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"nothing answers at {host}:{port} ({type(e).__name__}: {e})"


def check_server(uri: str, timeout: float = CONNECT_S) -> str | None:
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


def experiment_problem(uri: str, name: str | None) -> str | None:
    """Why runs cannot go to experiment ``name`` in the store ``uri``; None when they can."""
    if name is None:
        return None
    if not name.strip():
        return "empty; allowed: a name of 1 to 500 characters"
    if len(name) > MAX_EXPERIMENT_NAME:
        return f"{len(name)} characters; allowed: at most {MAX_EXPERIMENT_NAME} (MLflow's limit)"
    deleted = _deleted_experiment(uri, name)
    if deleted is not None:
        return (
            f"experiment {deleted} of that name is deleted; restore it with "
            f"MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {deleted}, "
            "or choose another tracking.experiment"
        )
    return None


def _deleted_experiment(uri: str, name: str) -> str | None:
    """The id of a deleted experiment named ``name`` (SQLite and http stores), else None."""
    path = sqlite_path(uri)
    if path is not None and path.is_file():
        with contextlib.suppress(sqlite3.Error):
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            ) as db:
                row = db.execute(
                    "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)
                ).fetchone()
            if row is not None and row[1] == "deleted":
                return str(row[0])
    if uri.startswith(("http://", "https://")):
        import requests

        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            got = requests.get(
                uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": name},
                timeout=CONNECT_S,
            )
            exp = got.json()["experiment"]
            if exp.get("lifecycle_stage") == "deleted":
                return str(exp["experiment_id"])
    return None


def fail_fast_http() -> None:
    """Make MLflow's calls to a server fail within seconds when it does not answer: by default
    each call retries for about four minutes. (Set in every process that calls MLflow; a user's
    own settings of these variables win.)"""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def missing_store(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store that does not exist: reading must not create one."""
    path = sqlite_path(uri)
    return path if path is not None and not path.is_file() else None
