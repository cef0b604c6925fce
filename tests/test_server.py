"""A parallel sweep against a real MLflow tracking server backed by a real PostgreSQL database.

Everything listens on 127.0.0.1 only. The servers are real processes, started and torn down here:
PostgreSQL from the Debian packages (``.ci/run`` installs them), ``mlflow server`` from the venv.
The helpers are shared with ``test_ui.py``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import compose_config


# --- system tools: skipped on a developer's machine without them, never in CI --------------------
def require(found: bool, what: str, install: str) -> None:
    """Skip when ``what`` is missing, except in CI (``CI`` set), where it must be installed."""
    if found:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{what} is missing although CI is set: .ci/run must install it ({install})")
    pytest.skip(f"{what} is not installed ({install}); CI installs it")


def postgres_bin() -> Path | None:
    """The directory of the newest PostgreSQL server binaries (Debian keeps them off PATH)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_checked(cmd: list[str], log: Path | None = None) -> None:
    """Run a setup command; on failure, fail the test with its output (and the server's log)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        extra = log.read_text() if log is not None and log.exists() else ""
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}\n{extra}")


# --- PostgreSQL ----------------------------------------------------------------------------------
@contextmanager
def postgres() -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster on a free 127.0.0.1 port; yield a database's URI.

    PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the ``postgres``
    user that the Debian package creates; its directory is made with ``mkdtemp`` because pytest's
    own temporary directories are private to root.
    """
    bindir = postgres_bin()
    as_root = os.geteuid() == 0
    has_user = not as_root or "postgres" in {u.pw_name for u in pwd.getpwall()}
    require(bindir is not None and has_user, "PostgreSQL", "apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="lrexp-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
    data, log, port = root / "data", root / "postgres.log", free_port()

    def pg(tool: str, *args: str) -> list[str]:
        return [*as_pg, str(bindir / tool), *args]

    try:
        # trust: the cluster accepts only 127.0.0.1 and lives as long as this test
        flags = ["-U", "lrexp", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"]
        run_checked(pg("initdb", "-D", str(data), *flags))
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
        run_checked(
            pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "start"), log
        )
        try:
            run_checked(
                pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "lrexp", "mlflow"), log
            )
            yield f"postgresql://lrexp@127.0.0.1:{port}/mlflow"
        finally:
            stop = pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            subprocess.run(stop, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- mlflow server -------------------------------------------------------------------------------
@contextmanager
def mlflow_server(backend_uri: str, workdir: Path, *, app_name: str | None = None) -> Iterator[str]:
    """Run ``mlflow server`` on a free 127.0.0.1 port until it answers /health; yield its URL.

    ``app_name`` serves another ``mlflow.app`` (``lrexp``: the UI opens experiments on their
    runs). It runs in its own process group (uvicorn forks workers), terminated at the end.
    """
    port, log = free_port(), workdir / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    cmd += ["--app-name", app_name] if app_name else []
    cmd += ["--artifacts-destination", str(workdir / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job queue
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
        yield url
    finally:
        stop_group(proc)


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120  # a new PostgreSQL store runs its migrations first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url}/health:\n{log.read_text()}")


def stop_group(proc: subprocess.Popen) -> None:
    """Terminate a process started with ``start_new_session=True`` and all of its children."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def lrexp_sweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m lrexp.train -m ...`` as a user types it; a broken server fails it fast."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LREXP_SWEEP_", "MLFLOW_TRACKING"))
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HYDRA_FULL_ERROR": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",  # default: ≈ 248 s of retries per call
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "lrexp.train", "-m", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )


# --- tests ---------------------------------------------------------------------------------------
def test_tracking_server_option_changes_only_the_uri():
    server = compose_config("tracking=server").tracking
    default = compose_config().tracking
    assert server.uri == "http://127.0.0.1:5000"
    assert {**server, "uri": None} == {**default, "uri": None}


@pytest.mark.slow
def test_parallel_sweep_on_postgres_backed_server_records_every_run(tmp_path):
    from mlflow.tracking import MlflowClient

    experiment = "server-sweep"
    with postgres() as db_uri, mlflow_server(db_uri, tmp_path) as url:
        proc = lrexp_sweep(
            tmp_path,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optimizer=sgd,adam",
            "train.seed=0,1",
            "train.epochs=2",
            "tracking=server",
            f"tracking.uri={url}",
            f"tracking.experiment={experiment}",
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

        client = MlflowClient(url)
        exp = client.get_experiment_by_name(experiment)
        assert exp is not None
        every_exp = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(every_exp)
        # Every run is in the named experiment: none landed in "Default" or anywhere else.
        assert len(runs) == 5
        assert {r.info.experiment_id for r in runs} == {exp.experiment_id}
        (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
        children = [r for r in runs if r.info.run_id != parent.info.run_id]
        assert parent.info.status == "FINISHED"
        assert all(r.info.status == "FINISHED" for r in children)
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
        assert sorted(
            (r.data.params["optimizer.name"], r.data.params["train.seed"]) for r in children
        ) == [
            ("adam", "0"),
            ("adam", "1"),
            ("sgd", "0"),
            ("sgd", "1"),
        ]
        theta = {"model/bias", *(f"model/theta_{i}" for i in range(1, 6))}
        for r in children:
            assert theta <= set(r.data.metrics), r.data.metrics
            assert r.data.metrics["epochs_run"] == 2
            # Artifacts went through the server into its artifact store, not a client directory.
            assert [a.path for a in client.list_artifacts(r.info.run_id, "config")] == [
                "config/config.yaml",
                "config/overrides.yaml",
            ]
            assert list((tmp_path / "artifacts").rglob(f"{r.info.run_id}/artifacts/theta.json"))
