"""A SQLite store's file itself: created or upgraded under a lock beside it, repaired after an
interrupted upgrade, a run ended by a direct write when MLflow cannot, and its query statistics."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from lrexp.tracking.store import StoreError, damaged, sqlite_path

# --- creating, repairing and ending ---------------------------------------------------------------
LOCK_WAIT_S = float(os.environ.get("LREXP_STORE_LOCK_S", "120"))  # for another's creation


@contextlib.contextmanager
def creating(uri: str, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``<db>.lock`` beside a SQLite store's file (``fcntl.flock``) and check the store is
    not damaged: MLflow creates and migrates its tables without a lock, so two processes doing
    it at once break the store. Other stores, and a directory where no lock file can be made
    (read-only), go unlocked."""
    with _locked(sqlite_path(uri), wait):
        path = sqlite_path(uri)
        if path is not None:
            damaged(path)
        yield


@contextlib.contextmanager
def _locked(path: Path | None, wait: float) -> Iterator[None]:
    try:
        fd = -1 if path is None else os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        fd = -1
    if fd < 0:
        yield
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{path}.lock was held by another process for {wait:.0f} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def repair(uri: str) -> list[str]:
    """Drop the tables an interrupted upgrade left (``_alembic_tmp_*``); return their names.
    MLflow copies a table into such a temporary one and renames it back: the original is intact."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return []
    query = (
        "SELECT name FROM sqlite_master WHERE type='table' "
        "AND name LIKE '!_alembic!_tmp!_%' ESCAPE '!'"
    )
    with _locked(path, LOCK_WAIT_S), contextlib.closing(sqlite3.connect(path, timeout=20)) as db:
        names = [r[0] for r in db.execute(query)]
        for n in names:
            db.execute(f'DROP TABLE "{n}"')
        db.commit()
    return names


def end_directly(uri: str, run_id: str, status: str, reason: str | None) -> bool:
    """End a run in a SQLite store with sqlite3 alone, when MLflow's own write failed (a full
    disk: the rollback journal is kept in memory, an in-place update needs no new page); return
    whether it worked. The last resort of a tracking process that must not leave a run RUNNING."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            db.execute("PRAGMA journal_mode=MEMORY")
            now = int(time.time() * 1000)
            db.execute(
                "UPDATE runs SET status = ?, end_time = ? "
                "WHERE run_uuid = ? AND status = 'RUNNING'",
                (status, now, run_id),
            )
            db.commit()
            if reason is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.execute(
                        "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                        ("lrexp.failure_reason", reason, run_id),
                    )
                    db.commit()
        return True
    except sqlite3.Error:
        return False


def analyze(uri: str) -> None:
    """Give SQLite's query planner statistics on a ``sqlite:///`` store (a sampled ``ANALYZE``).

    Without them SQLite reads one run's metric history through the index on the metric's key
    alone, scanning that metric of every run in the store: 6 ms a curve in a store of 300,000
    values, and growing with it; with them, through the index on run and key: 0.08 ms. The
    statistics stay in the file (``sqlite_stat1``); sampling keeps this call near 0.1 s.
    """
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return
    with contextlib.closing(sqlite3.connect(path, timeout=20)) as db:
        db.execute("PRAGMA analysis_limit=1000")  # rows sampled per index
        db.execute("ANALYZE")
        db.commit()
