"""A hostile world, provoked for real: signals at every phase of a run, runs racing on one store,
a locked, full, corrupted or half-migrated store, and tracking URIs that cannot work.

Every test runs ``python -m lrexp.train`` as a subprocess against a real SQLite store and reads
the store back. Phases are reached through lrexp's test hook (:mod:`lrexp.tracking.hooks`): the
process writes a marker file and waits, the test delivers its signal, then lets it go; no test
guesses a phase's timing with a sleep. The default run takes a representative subset of the kill
matrix; the other cells are marked ``full``: CI runs them (``CI_FULL=1 python -m pytest -m full``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrexp.tracking import channel, hooks, lifecycle

# This process reads stores that runs are creating: its MLflow, too, must create one only under
# lrexp's lock, which importing lifecycle arranges.
assert lifecycle.init_store

EXIT_S = 30  # a process stopped by a signal has exited within this (a loaded machine)
SMALL = ["train.epochs=3", "data.n=200"]
EXPERIMENT = "hostile"


# --- running lrexp --------------------------------------------------------------------------------
def launch(
    cwd: Path, *overrides: str, pause: str | None = None, logs: Path | None = None, **env: str
) -> subprocess.Popen:
    """``python -m lrexp.train`` in ``cwd`` (its own process group), tracking to cwd/mlflow.db;
    output to files in ``logs`` (default ``cwd``; a tracking process left to finish must not
    hold a pipe open)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LREXP_HEARTBEAT_S": "0.5", **env}
    if pause is not None:
        env.update(LREXP_TEST_PAUSE_AT=pause, LREXP_TEST_PAUSE_DIR=str(cwd))
    args = [sys.executable, "-m", "lrexp.train", *SMALL, *overrides]
    if not any(o.startswith("tracking.uri=") for o in overrides):
        args.append(f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}")
    if not any(o.startswith("tracking.experiment=") for o in overrides):
        args.append(f"tracking.experiment={EXPERIMENT}")
    logs = logs or cwd
    out, err = (open(logs / f"{name}.txt", "w") for name in ("stdout", "stderr"))  # noqa: SIM115
    with out, err:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )


def stderr_of(cwd: Path) -> str:
    return (cwd / "stderr.txt").read_text()


def wait_paused(cwd: Path, phase: str, proc: subprocess.Popen, within: float = 180) -> None:
    marker, end = cwd / f"{phase}.paused", time.monotonic() + within
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {phase}: {stderr_of(cwd)}")
        if time.monotonic() > end:
            raise AssertionError(f"never reached {phase}: {stderr_of(cwd)[-3000:]}")
        time.sleep(0.02)


def release(cwd: Path, phase: str) -> None:
    (cwd / f"{phase}.go").touch()


def runs(cwd: Path, uri: str | None = None) -> list:
    uri = uri or f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return []
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def settled(cwd: Path, within: float = 60, *, made: bool = False) -> list:
    """The store's runs once none is RUNNING (a tracking process may still be ending its run
    after the training process exited; with ``made``, still making it); those left RUNNING
    after ``within`` s."""
    end = time.monotonic() + within
    while True:
        found = runs(cwd)
        done = all(r.info.status != "RUNNING" for r in found) and (found or not made)
        if done or time.monotonic() > end:
            return found
        time.sleep(0.2)


def reap(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lrexp.runs", "reap", "--older-than", "0"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def artifacts(uri: str, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in MlflowClient(uri).list_artifacts(run_id, path):
        out |= artifacts(uri, run_id, a.path) if a.is_dir else {a.path}
    return out


# --- (a) the kill matrix --------------------------------------------------------------------------
SIGNALS = ("SIGINT", "SIGTERM", "kill", "kill-all")  # kill: SIGKILL of the training process
TRAINED = ("curves", "artifacts", "model", "end")  # phases reached after training finished
SUBSET = {
    ("startup", "SIGINT"),
    ("store", "SIGTERM"),
    ("params", "kill"),
    ("training", "SIGTERM"),
    ("training", "SIGINT"),
    ("curves", "SIGTERM"),
    ("artifacts", "kill-all"),
    ("model", "SIGINT"),
    ("model", "kill"),
    ("end", "SIGTERM"),
}
CELLS = [
    pytest.param(
        phase, sig, marks=[] if (phase, sig) in SUBSET else [pytest.mark.full], id=f"{phase}-{sig}"
    )
    for phase in hooks.PHASES
    for sig in SIGNALS
]
REASONS = {
    "SIGINT": "interrupted (Ctrl-C / SIGINT)",
    "SIGTERM": "terminated (SIGTERM)",
    "kill": channel.ORPHANED,
    "kill-all": "no heartbeat since",
}


def deliver(proc: subprocess.Popen, sig: str) -> None:
    if sig == "kill-all":
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its tracking process
    else:
        os.kill(proc.pid, getattr(signal, sig, signal.SIGKILL))


@pytest.mark.parametrize(("phase", "sig"), CELLS)
def test_a_signal_at_any_phase_ends_the_run_killed_keeping_what_was_computed(tmp_path, phase, sig):
    proc = launch(tmp_path, pause=phase)
    wait_paused(tmp_path, phase, proc)
    deliver(proc, sig)
    release(tmp_path, phase)  # a tracking process paused there goes on (the training one is gone)
    code = proc.wait(timeout=EXIT_S)
    assert code != 0, stderr_of(tmp_path)[-3000:] + (tmp_path / "stdout.txt").read_text()[-3000:]
    if sig in ("SIGINT", "SIGTERM"):
        lines = stderr_of(tmp_path).strip().splitlines()
        assert lines[-1].startswith("lrexp: stopped:"), lines[-10:]
        assert "Traceback" not in stderr_of(tmp_path)
    if sig == "kill-all" and (tmp_path / "mlflow.db").exists():
        assert reap(tmp_path).returncode == 0
    made = phase != "startup" and (phase, sig) != ("store", "kill-all")
    found = settled(tmp_path, made=made)
    if not made:
        assert found == []  # killed before its run was made: none is left behind
        return
    (run,) = found
    assert run.info.status == "KILLED", run.data.tags
    assert run.data.tags["lrexp.failure_reason"].startswith(REASONS[sig])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "loss/train_mse")
    kept = artifacts(uri, run.info.run_id)
    if phase in ("params", "training"):  # (at "store", the params may not be sent yet)
        assert "run.n_train" in run.data.params  # sent before the signal: kept
    if phase == "training" and sig in ("SIGINT", "SIGTERM"):
        assert len(history) >= 1 and "history.csv" in kept  # the curve up to the signal
    if phase in TRAINED:
        assert len(history) == 4  # every epoch of the finished curve (3 and the start)
    if phase in TRAINED[1:]:
        assert {"history.csv", "theta.json", "plots/loss_curve.svg"} <= kept
    if phase == "end":
        assert "final_test_mse" in run.data.metrics


def test_sigterm_during_a_long_final_write_never_hangs(tmp_path):
    """The probe's hang: a SIGTERM while the training process sends a large message. Frames are
    written by a thread of their own, so the signal cannot cut one short."""
    proc = launch(
        tmp_path,
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "train.batch_size=null",
        "train.steps=20000",
        "tracking.max_curve_points=20000",
        pause="curves",
    )
    wait_paused(tmp_path, "curves", proc)
    proc.send_signal(signal.SIGTERM)
    release(tmp_path, "curves")
    assert proc.wait(timeout=EXIT_S) == 128 + signal.SIGTERM
    (run,) = settled(tmp_path)
    assert run.info.status == "KILLED"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss/train_mse")) > 1000


def test_a_second_and_third_sigterm_still_end_the_process(tmp_path):
    proc = launch(tmp_path, pause="model")
    wait_paused(tmp_path, "model", proc)
    for _ in range(3):  # the tracking process is paused: the first ending waits for it
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # not a timing guess: three signals spread over its shutdown
    assert proc.wait(timeout=EXIT_S) != 0
    release(tmp_path, "model")
    (run,) = settled(tmp_path)
    assert run.info.status == "KILLED"


# --- (b) runs racing on one store -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "fresh"),
    [
        pytest.param(2, True, marks=pytest.mark.full),
        (10, True),
        (2, False),
        pytest.param(10, False, marks=pytest.mark.full),
    ],
)
def test_independent_runs_at_once_all_finish_on_one_store(tmp_path, n, fresh):
    if not fresh:
        first = launch(tmp_path, "train.seed=99")
        assert first.wait(timeout=300) == 0, stderr_of(tmp_path)
    procs = []
    for i in range(n):
        cwd = tmp_path / f"job{i}"
        cwd.mkdir()
        procs.append(
            launch(cwd, f"train.seed={i}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
        )
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0] * n, [stderr_of(tmp_path / f"job{i}")[-1500:] for i in range(n)]
    found = runs(tmp_path)
    assert len(found) == n + (0 if fresh else 1)
    assert {r.info.status for r in found} == {"FINISHED"}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]
    after = launch(tmp_path, "train.seed=100")  # the store is usable after
    assert after.wait(timeout=300) == 0, stderr_of(tmp_path)


# --- (c) store faults -----------------------------------------------------------------------------
def one_error_line(cwd: Path) -> str:
    lines = [line for line in stderr_of(cwd).splitlines() if line.startswith("lrexp: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr_of(cwd), stderr_of(cwd)[-3000:]
    return lines[0]


def make_store(cwd: Path) -> Path:
    proc = launch(cwd, "train.seed=99")
    assert proc.wait(timeout=300) == 0, stderr_of(cwd)
    return cwd / "mlflow.db"


@contextlib.contextmanager
def locked(db: Path):
    """A second connection holding the store's exclusive lock until the block ends."""
    script = (
        f"import sqlite3, sys; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
        "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("\n", timeout=30)


FAST_LOCK = {"LREXP_STORE_RETRIES": "0", "LREXP_STORE_BUSY_S": "1", "LREXP_EXIT_RETRY_S": "120"}


def test_a_store_locked_before_the_run_fails_in_a_line_and_leaves_no_run(tmp_path):
    db = make_store(tmp_path)
    with locked(db):
        proc = launch(tmp_path, "train.seed=1", **FAST_LOCK)
        assert proc.wait(timeout=120) == 4
    assert "locked" in one_error_line(tmp_path)
    assert [r.info.status for r in settled(tmp_path)] == ["FINISHED"]  # only the first run


def test_a_store_locked_after_training_began_ends_the_run_failed_once_it_frees(tmp_path):
    db = make_store(tmp_path)
    proc = launch(tmp_path, "train.seed=1", pause="training", **FAST_LOCK)
    wait_paused(tmp_path, "training", proc)
    with locked(db):
        release(tmp_path, "training")
        assert proc.wait(timeout=120) == 4  # the writes failed, as did the run's end
        assert "locked" in one_error_line(tmp_path)
    (run,) = [r for r in settled(tmp_path) if r.data.params.get("train.seed") == "1"]
    assert run.info.status == "FAILED"  # ended by the tracking process once the lock was gone
    assert "locked" in run.data.tags["lrexp.failure_reason"]


def test_a_corrupted_store_is_refused_in_a_line_and_kept_as_it_was(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database, " * 512)
    before = db.read_bytes()
    proc = launch(tmp_path)
    assert proc.wait(timeout=120) == 2
    assert "not a usable SQLite database" in one_error_line(tmp_path)
    assert db.read_bytes() == before


def test_a_half_migrated_store_is_refused_with_the_repair_and_works_after_it(tmp_path):
    db = make_store(tmp_path)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE _alembic_tmp_latest_metrics (x INTEGER)")
    before = db.read_bytes()
    proc = launch(tmp_path, "train.seed=1")
    assert proc.wait(timeout=120) == 2
    line = one_error_line(tmp_path)
    assert "half-migrated" in line and "python -m lrexp.runs repair" in line
    assert db.read_bytes() == before
    repair = subprocess.run(
        [sys.executable, "-m", "lrexp.runs", "repair"], cwd=tmp_path, capture_output=True, text=True
    )
    assert repair.returncode == 0 and "_alembic_tmp_latest_metrics" in repair.stdout
    assert launch(tmp_path, "train.seed=2").wait(timeout=300) == 0, stderr_of(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_that_fills_during_the_run_ends_it_never_running_and_reap_works(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        proc = launch(disk, "train.seed=99", f"tracking.uri={uri}")
        assert proc.wait(timeout=300) == 0, stderr_of(disk)
        # the full disk is the launch directory; what it prints goes to the test's own disk
        proc = launch(
            disk,
            "train.seed=1",
            f"tracking.uri={uri}",
            pause="training",
            logs=tmp_path,
            **FAST_LOCK,
        )
        wait_paused(disk, "training", proc)
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        release(disk, "training")
        assert proc.wait(timeout=120) == 4
        assert "full" in one_error_line(tmp_path)
        statuses = {r.data.params.get("train.seed"): r.info.status for r in settled(disk, 150)}
        assert statuses == {"99": "FINISHED", "1": "FAILED"}  # ended, though nothing else fits
        reaped = reap(disk)
        assert reaped.returncode == 0 and "Traceback" not in reaped.stderr
        with sqlite3.connect(disk / "mlflow.db") as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        subprocess.run(["umount", "-l", str(disk)])


# --- (d) tracking URIs and experiments that cannot work -------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deleted_experiment(cwd: Path) -> str:
    make_store(cwd)
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    client.delete_experiment(client.get_experiment_by_name(EXPERIMENT).experiment_id)
    return f"tracking.experiment={EXPERIMENT}"


BAD = {
    "file-store": ("tracking.uri=file:///tmp/x", "file store"),
    "no-scheme": ("tracking.uri=mlflow.db", "no scheme"),
    "databricks": ("tracking.uri=databricks", "does not store runs in 'databricks'"),
    "unknown-scheme": ("tracking.uri=foo://bar", "does not store runs in 'foo'"),
    "empty-path": ("tracking.uri=sqlite:///", "no database file"),
    "no-driver": ("tracking.uri=postgresql://nowhere/db", "psycopg2"),
    "unreachable-db": (
        f"tracking.uri=postgresql+psycopg://127.0.0.1:{closed_port()}/db",
        "nothing answers",
    ),
    "long-experiment": ("tracking.experiment=" + "x" * 10_000, "at most 500"),
}


@pytest.mark.parametrize("case", [*BAD, "read-only-dir", "deleted-experiment"])
def test_a_tracking_uri_or_experiment_that_cannot_work_fails_before_any_run(tmp_path, case):
    extra: list[str] = []
    if case == "read-only-dir":
        if os.geteuid() == 0:  # root writes anywhere but to a read-only mount
            ro = tmp_path / "ro"
            ro.mkdir()
            if subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]
            ).returncode:
                pytest.skip("cannot mount a tmpfs here")
        else:
            ro = tmp_path / "ro"
            ro.mkdir(mode=0o555)
        override, expected = f"tracking.uri=sqlite:///{ro / 'x.db'}", "not writable"
    elif case == "deleted-experiment":
        override, expected = deleted_experiment(tmp_path), "mlflow experiments restore"
        before = runs(tmp_path)
    else:
        override, expected = BAD[case]
    try:
        proc = launch(tmp_path, override, *extra)
        assert proc.wait(timeout=60) == 2
        line = one_error_line(tmp_path)
        assert line.startswith(f"lrexp: error: {override.split('=')[0]}=") and expected in line
    finally:
        if case == "read-only-dir" and os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(tmp_path / "ro")])
    assert "epoch" not in stderr_of(tmp_path)  # nothing trained
    if case == "deleted-experiment":
        assert [r.info.run_id for r in runs(tmp_path)] == [r.info.run_id for r in before]
    else:
        assert not (tmp_path / "mlflow.db").exists()  # no run anywhere, no store made


# --- the channel: a tracking process never waits forever on its training process -----------------
@contextlib.contextmanager
def bare_server(tmp_path: Path, trainer: int | None, **env: str):
    """A tracking process served over a raw socket: the test plays its training process, and
    can do what lrexp's own side never does (stop mid-message, fall silent)."""
    ours, theirs = socket.socketpair()
    code = f"from lrexp.tracking.server import serve; serve({theirs.fileno()}, [], {trainer})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "bare"],
        pass_fds=[theirs.fileno()],
        env={**os.environ, "LREXP_HEARTBEAT_S": "0.2", **env},
    )
    theirs.close()
    try:
        yield ours, proc
    finally:
        ours.close()
        proc.wait(timeout=60)


def open_bare_run(sock: socket.socket, uri: str) -> str:
    channel.send_frame(sock, ("open", (uri, "bare", "bare", {}), {"exp_id": None}))
    kind, run_id = channel.recv_frame(sock)
    assert kind == "ok", run_id
    return run_id


def test_a_message_cut_short_ends_the_run_killed_instead_of_a_wait_forever(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with bare_server(tmp_path, None, LREXP_FRAME_S="2") as (sock, proc):
        run_id = open_bare_run(sock, uri)
        sock.sendall(channel.HEADER.pack(1000) + b"x" * 10)  # then nothing: a writer stuck
        assert proc.wait(timeout=60) == 0  # it gave up on the message, and ended
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert "cut short" in run.data.tags["lrexp.failure_reason"]


def test_the_heartbeat_stops_while_the_training_process_is_silent_or_gone(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    client = MlflowClient(uri)
    with bare_server(tmp_path, trainer.pid, LREXP_SILENT_S="1") as (sock, proc):
        run_id = open_bare_run(sock, uri)
        beats = set()
        while len(beats) < 3:  # it beats while the training process was heard from lately
            channel.send_frame(sock, channel.PING)
            beats.add(client.get_run(run_id).data.tags["lrexp.heartbeat"])
            time.sleep(0.1)
        time.sleep(1.5)  # silent past LREXP_SILENT_S: no more beats
        silent = client.get_run(run_id).data.tags["lrexp.heartbeat"]
        time.sleep(1.0)
        assert client.get_run(run_id).data.tags["lrexp.heartbeat"] == silent
        trainer.kill()  # gone, though its connection stays open (the test holds it)
        trainer.wait()
        assert proc.wait(timeout=60) == 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["lrexp.failure_reason"] == channel.ORPHANED


def test_a_stop_signal_dropped_in_a_gc_callback_still_ends_the_run_killed(tmp_path):
    """Python runs a signal handler wherever the main thread is, also in a finalizer, where its
    exception is printed and dropped (it happened in JAX's gc callback): the request is kept."""
    from lrexp.tracking import signals

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside the finalizer
                pass

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with (
        signals.sigterm_raises(),
        pytest.raises(signals.Terminated),
        lifecycle.run(uri, "dropped", "dropped", {}) as run_id,
    ):
        Finalized()  # its exception never reaches this block
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["lrexp.failure_reason"] == "terminated (SIGTERM)"
