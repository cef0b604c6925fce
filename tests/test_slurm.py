"""Sweeps on a real SLURM cluster: ``scripts/slurm_cluster.sh`` starts one on this machine (root
only; CI is root and must run these), a real ``mlflow server`` on 127.0.0.1 takes the runs.

Each case runs the README's ``hydra/launcher=slurm ... tracking=server`` sweep, shrunk, as a real
job array; the jobs pause at a phase of their run (``lrexp.tracking.hooks``) where a test must
hit them with ``scancel`` or a requeue, so that nothing depends on timing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from test_server import mlflow_server, require

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
PACKAGES = "apt-get install slurm-wlm slurmdbd munge mariadb-server"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
full_only = pytest.mark.full  # CI's second pass (CI_FULL=1 pytest -m full) runs it


def test_slurm_launcher_option_composes_to_lrexps_array_launcher():
    with initialize_config_module(version_base="1.3", config_module="lrexp.conf"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.lrexp_launcher.slurm_launcher.SlurmLauncher"
    assert launcher.partition is None and launcher.timeout_min == 30
    assert launcher.cpus_per_task == 2 and launcher.tasks_per_node == 1
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # logs by the sweep
    assert launcher.additional_parameters == {"requeue": True}  # preemption reruns a job


# --- the cluster and the tracking server ---------------------------------------------------------
def cluster(*args: str) -> subprocess.CompletedProcess:
    """Run ``scripts/slurm_cluster.sh``; under CI (or as root with SLURM installed) a failure to
    start fails the test."""
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=400)
    if proc.returncode != 0:
        pytest.fail(f"slurm_cluster.sh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def cluster_start(*args: str) -> subprocess.Popen:
    """Start ``scripts/slurm_cluster.sh start`` in the background (see :func:`cluster_ready`)."""
    return subprocess.Popen(
        ["bash", str(SCRIPT), "start", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def cluster_ready(proc: subprocess.Popen) -> None:
    """Wait for the script (bounded by its own waits); its failure fails the test."""
    out, _ = proc.communicate(timeout=400)
    if proc.returncode != 0:
        pytest.fail(f"slurm_cluster.sh start failed:\n{out}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[str]:
    """A running single-node cluster (with accounting) and a tracking server; the server's URL.
    The cluster starts while the server does; it is stopped at the end."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must run the SLURM tests as root (the daemons run as root)")
        pytest.skip("a local SLURM cluster needs root")
    require(shutil.which("slurmctld") is not None, "SLURM", PACKAGES)
    folder = Path(os.environ.get("LREXP_SLURM_DIR", "/tmp/lrexp-slurm"))
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")  # the jobs' and the sweep's commands
    starting = cluster_start()
    workdir = tmp_path_factory.mktemp("slurm-server")
    try:
        with mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", workdir) as url:
            cluster_ready(starting)
            yield url
    finally:
        if starting.poll() is None:
            starting.kill()
        cluster("stop")


def start_sweep(cwd: Path, url: str, experiment: str, *overrides: str, **env: str):
    """Start the README's SLURM sweep (shrunk) in the background; stdout and stderr to files."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LREXP_SWEEP_")}
    environ.update(
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="1",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        MLFLOW_HTTP_REQUEST_TIMEOUT="30",
        **env,
    )
    args = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
    args += ["tracking=server", f"tracking.uri={url}", f"tracking.experiment={experiment}"]
    args += ["train.epochs=2", "tracking.log_model=false", *overrides]
    with open(cwd / "out.txt", "w") as out, open(cwd / "err.txt", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "lrexp.train", "-m", *args],
            cwd=cwd,
            env=environ,
            stdout=out,
            stderr=err,
        )


def finish(proc: subprocess.Popen, cwd: Path, timeout_s: float) -> str:
    """Wait for the sweep (bounded: past it, kill it and fail); its output, logs included."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the sweep did not end within {timeout_s:.0f}s:\n{output(cwd)}")
    return output(cwd)


def output(cwd: Path) -> str:
    logs = "".join(f"\n--- {f.name}\n" + f.read_text()[-1500:] for f in cwd.rglob("*_log.*"))
    return (cwd / "out.txt").read_text()[-3000:] + (cwd / "err.txt").read_text()[-3000:] + logs


def poll(what: str, check, cwd: Path, timeout_s: float = 180.0):
    """Poll ``check()`` until it returns something true; bounded, failing with the output."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout_s:.0f}s\n{output(cwd)}")


def array_of(cwd: Path) -> str | None:
    found = re.search(r"SLURM job array (\d+)", (cwd / "out.txt").read_text())
    return found.group(1) if found else None


def sweep_runs(url: str, experiment: str) -> tuple:
    """(parent, children) of the experiment's sweep."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("lrexp.sweep") != "true"]
    return (parents[0] if parents else None), children


def job_of(run) -> str:
    return run.data.tags.get("lrexp.job_num", "?")


def running_children(url: str, experiment: str, n: int) -> list:
    _, children = sweep_runs(url, experiment)
    running = [r for r in children if r.info.status == "RUNNING"]
    return running if len(running) >= n else []


def squeue(array: str) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "--states=all", "-j", array, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())


def start_now(task: str) -> bool:
    """Whether ``task`` runs; a requeued task that SLURM holds for 2 minutes (its BeginTime,
    once its first attempt has ended) is made to start now, as an impatient admin would."""
    cmd = ["squeue", "-h", "-j", task, "-o", "%T %r"]
    state = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.split()
    if state == ["PENDING", "BeginTime"]:
        update = ["scontrol", "update", f"jobid={task}", "StartTime=now"]
        subprocess.run(update, capture_output=True, timeout=60)
    return state[:1] == ["RUNNING"]


def paused(tmp_path: Path, phase: str = "params") -> dict[str, str]:
    """Environment for the jobs: pause each at ``phase`` until the test releases or kills it."""
    (tmp_path / "pause").mkdir(exist_ok=True)
    return {
        "LREXP_TEST_PAUSE_AT": phase,
        "LREXP_TEST_PAUSE_DIR": str(tmp_path / "pause"),
        "LREXP_TEST_PAUSE_S": "600",
    }


# --- the cases -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_slurm_sweep_runs_a_job_array_every_child_finished(slurm, tmp_path):
    server = slurm
    experiment = "slurm-ok"
    proc = start_sweep(tmp_path, server, experiment, "optimizer=sgd,adam")
    out = finish(proc, tmp_path, 300)
    assert proc.returncode == 0, out
    parent, children = sweep_runs(server, experiment)
    assert parent is not None and parent.info.status == "FINISHED", out
    assert sorted(r.data.params["optimizer.name"] for r in children) == ["adam", "sgd"]
    assert all(r.info.status == "FINISHED" for r in children), out
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    # They ran as SLURM's array tasks: slurmctld knows them, and each task's log names its run.
    array = array_of(tmp_path)
    assert set(squeue(array)) == {f"{array}_0", f"{array}_1"}, squeue(array)
    logs = list(tmp_path.glob(f"multirun/*/*/.submitit/{array}_*/{array}_*_log.out"))
    logged = {m for log in logs for m in re.findall(r"MLflow run ([0-9a-f]{32})", log.read_text())}
    assert logged == {r.info.run_id for r in children}, out
    (script,) = tmp_path.glob(f"multirun/*/*/.submitit/{array}/*_submission.sh")
    assert "#SBATCH --requeue\n" in script.read_text()


def cancel_one_task(tmp_path: Path, server: str, experiment: str) -> tuple:
    """Two jobs, paused in their runs; scancel the second: the sweep's end, its output, the
    seconds from the scancel to the sweep's exit, and the runs and tasks as the sweep left them."""
    proc = start_sweep(tmp_path, server, experiment, "optimizer=sgd,adam", **paused(tmp_path))
    try:
        array = poll("the array's id", lambda: array_of(tmp_path), tmp_path)
        running = poll("two running", lambda: running_children(server, experiment, 2), tmp_path)
        victim = max(running, key=job_of)
        task, sibling = f"{array}_{job_of(victim)}", f"{array}_{min(map(job_of, running))}"
        subprocess.run(["scancel", task], check=True, timeout=60)
        cancelled_at = time.monotonic()
        out = finish(proc, tmp_path, 240)
        took = time.monotonic() - cancelled_at
        ended = (*sweep_runs(server, experiment), squeue(array))  # before the cleanup below
    finally:
        cleanup(proc, tmp_path)
    return proc, out, (task, sibling), victim.info.run_id, took, ended


def cleanup(proc: subprocess.Popen, cwd: Path) -> None:
    """After a test's checks are taken: nothing of its sweep runs on."""
    if proc.poll() is None:
        proc.kill()
    subprocess.run(["scancel", array_of(cwd) or "0"], capture_output=True, timeout=60)


@pytest.mark.slow
def test_scancel_of_one_task_kills_its_child_cancels_the_rest_and_ends_the_sweep(slurm, tmp_path):
    check_cancelled_sweep(slurm, tmp_path, "slurm-scancel")


def check_cancelled_sweep(server: str, tmp_path: Path, experiment: str) -> None:
    proc, out, (task, sibling), victim_id, took, (parent, children, states) = cancel_one_task(
        tmp_path, server, experiment
    )
    assert proc.returncode == 1, out
    assert took < 120, (took, out)  # noticed from squeue at once; not submitit's sacct wait
    (victim,) = [r for r in children if r.info.run_id == victim_id]
    assert victim.info.status == "KILLED", out
    assert victim.data.tags["lrexp.failure_reason"] == "terminated (SIGTERM)"
    # The parent says which job ended the sweep, and that the others were cancelled.
    assert parent.info.status == "KILLED", out
    reason = parent.data.tags["lrexp.failure_reason"]
    assert f"SLURM job {task} " in reason and "CANCELLED" in reason, reason
    assert reason.endswith(f"the sweep cancelled its other jobs {sibling}"), reason
    assert f"lrexp: error: SLURM job {task} " in out
    # No child is left RUNNING, none FINISHED after its parent was killed; no task still runs.
    assert sorted((job_of(r), r.info.status) for r in children) == [
        ("0", "KILLED"),
        ("1", "KILLED"),
    ]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert states == {task: "CANCELLED", sibling: "CANCELLED"}, states


@pytest.mark.slow
@full_only
def test_requeued_task_reruns_its_job_without_duplicating_finished_children(slurm, tmp_path):
    """Preemption as SLURM does it: SIGTERM, then the same job again (``scontrol requeue``)."""
    server, experiment = slurm, "slurm-requeue"
    pause = paused(tmp_path)
    proc = start_sweep(
        tmp_path, server, experiment, "optimizer=sgd,adam", "tracking.skip_finished=true", **pause
    )
    try:
        array = poll("the array's id", lambda: array_of(tmp_path), tmp_path)
        running = poll("two running", lambda: running_children(server, experiment, 2), tmp_path)
        first = next(r for r in running if job_of(r) == "1")
        subprocess.run(["scontrol", "requeue", f"{array}_1"], check=True, timeout=60)

        def first_killed() -> bool:
            _, children = sweep_runs(server, experiment)
            ended = {r.info.run_id: r.info.status for r in children}
            return ended[first.info.run_id] == "KILLED"

        poll("the first attempt's child KILLED", first_killed, tmp_path)
        poll("the rerun started", lambda: start_now(f"{array}_1"), tmp_path)
        poll("the rerun's child", lambda: running_children(server, experiment, 2), tmp_path)
        (Path(pause["LREXP_TEST_PAUSE_DIR"]) / "params.go").touch()
        out = finish(proc, tmp_path, 300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    parent, children = sweep_runs(server, experiment)
    assert parent.info.status == "FINISHED", out
    ends = sorted((job_of(r), r.info.status) for r in children)
    assert ends == [("0", "FINISHED"), ("1", "FINISHED"), ("1", "KILLED")], (ends, out)
    (killed,) = [r for r in children if r.info.status == "KILLED"]
    assert killed.info.run_id == first.info.run_id
    assert killed.data.tags["lrexp.failure_reason"] == "terminated (SIGTERM)"
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)

    # A finished job requeued (preempted as it ended, or by an admin) runs again: with
    # tracking.skip_finished its rerun trains nothing and records that it skipped.
    (done,) = [r for r in children if job_of(r) == "0"]
    subprocess.run(["scontrol", "requeue", f"{array}_0"], check=True, timeout=60)

    def skipped() -> list:
        start_now(f"{array}_0")
        _, children = sweep_runs(server, experiment)
        return [r for r in children if r.data.tags.get("lrexp.skipped_for") == done.info.run_id]

    (skip,) = poll("the finished job's rerun", skipped, tmp_path)
    _, children = sweep_runs(server, experiment)
    trained = [r for r in children if "lrexp.skipped_for" not in r.data.tags]
    ends = sorted((job_of(r), r.info.status) for r in trained)
    assert ends == [("0", "FINISHED"), ("1", "FINISHED"), ("1", "KILLED")], ends
    assert skip.data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
@full_only
def test_without_accounting_a_cancelled_task_still_ends_the_sweep(slurm, tmp_path):
    """No slurmdbd, so no sacct: submitit alone would wait forever; squeue tells lrexp."""
    cluster("start", "--no-accounting")
    try:
        check_cancelled_sweep(slurm, tmp_path, "slurm-no-accounting")
    finally:
        cluster("start")  # back to the cluster the other tests expect


@pytest.mark.slow
@full_only
def test_stopping_the_sweep_cancels_its_jobs_and_kills_every_run(slurm, tmp_path):
    """SIGTERM to the launching process (a scheduler's, ``kill``): no job runs on without it."""
    server, experiment = slurm, "slurm-stop-sweep"
    proc = start_sweep(tmp_path, server, experiment, "optimizer=sgd,adam", **paused(tmp_path))
    try:
        array = poll("the array's id", lambda: array_of(tmp_path), tmp_path)
        poll("two running", lambda: running_children(server, experiment, 2), tmp_path)
        proc.terminate()
        out = finish(proc, tmp_path, 240)
        (parent, children), states = sweep_runs(server, experiment), squeue(array)
    finally:
        cleanup(proc, tmp_path)
    assert proc.returncode == 143, out
    assert parent.info.status == "KILLED", out
    assert [r.info.status for r in children] == ["KILLED", "KILLED"], out
    assert all(r.data.tags["lrexp.failure_reason"] == "terminated (SIGTERM)" for r in children)
    assert set(states.values()) == {"CANCELLED"}, states
