"""Every command in README.md's ```bash blocks, run as a newcomer pastes it after the quick start.

The commands are read from README.md when the tests are collected, so the tests follow the README
as it is rewritten. The conventions they rely on are in ``docs/notes/ui.md``; in short:

- after the quick start, the README activates the virtual environment once
  (``source .venv/bin/activate``) and later commands call ``python`` and ``mlflow`` bare;
  the commands run here with the venv's ``bin`` first on PATH, as activation leaves them;
- a command exits 0 unless its comment documents another status (``# exit 2``);
- ``<run id>`` and ``<parent run id>`` stand for ids of runs made here; a line with an
  upper-case placeholder (``USER@DBHOST``, ``DIR``) is a template and is not run;
- ``mlflow ui``/``mlflow server`` block: each is started, must answer ``/health``, and is stopped;
- long commands are shrunk: ``train.epochs=2`` (unless they set epochs or steps), sweeps to their
  first two values per key, searches to two trials; multiruns are marked slow.

Each command runs in one shared temporary directory (the store accumulates, as a user's does) whose
``.venv`` links to this interpreter's environment.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_server import free_port, stop_group

README = Path(__file__).resolve().parents[1] / "README.md"
ACTIVATE = "source .venv/bin/activate"
INSTALLS = (re.compile(r"^python[\d.]* -m venv\b"), re.compile(r"(^|/)pip install\b"))
PLACEHOLDERS = ("<run id>", "<parent run id>")
TEMPLATE = re.compile(r"\b[A-Z][A-Z_]{2,}\b(?!=)")  # USER, DBHOST, DIR; not VAR=value
EXIT = re.compile(r"\bexit(?:s| status| code)?(?: with)? (\d+)\b")
RUN_TIMEOUT_S = 300


def bash_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks, continuations joined, in README order."""
    lines, inside = [], False
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            inside = raw.strip() == "```bash"
            continue
        if not inside:
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + raw.strip()
        elif raw.strip() and not raw.strip().startswith("#"):
            lines.append(raw.strip())
    return lines


def split_comment(line: str) -> tuple[str, str]:
    """A line's command and its trailing ``# comment`` (a ``#`` outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and line[i - 1] == " ":
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.strip(), ""


def commands(text: str) -> list[tuple[str, int, str]]:
    """Each command to run: (command, expected exit status, README line), in README order; the
    quick start's venv and pip install steps left out, ``&&`` chains split."""
    found = []
    for line in bash_lines(text):
        command, comment = split_comment(line)
        m = EXIT.search(comment)
        for part in command.split(" && "):
            part = part.strip()
            if part == ACTIVATE or any(p.search(part) for p in INSTALLS):
                continue
            found.append((part, int(m.group(1)) if m else 0, line))
    return found


def words(command: str) -> list[str]:
    return shlex.split(command)


def is_train(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0].endswith("python") and argv[1:3] == ["-m", "lrexp.train"]


def is_server(argv: list[str]) -> bool:
    return len(argv) >= 2 and argv[0].endswith("mlflow") and argv[1] in ("ui", "server")


def is_multirun(argv: list[str]) -> bool:
    return is_train(argv) and bool({"-m", "--multirun"} & set(argv[3:]))


def shrink(argv: list[str]) -> list[str]:
    """A training command made short: 2 epochs, sweeps of at most two values, two trials."""
    if not is_train(argv) or {"--cfg", "-c", "--help", "-h", "--info"} & set(argv):
        return argv
    out = []
    for a in argv:
        key, sep, value = a.partition("=")
        plain = sep and not any(c in value for c in "[]()") and "launcher." not in key
        if is_multirun(argv) and plain and "," in value:
            a = f"{key}={','.join(value.split(',')[:2])}"
        out.append(a)
    if not any(a.startswith(("train.epochs=", "train.steps=")) for a in out):
        out.append("train.epochs=2")
    if any(a.startswith("hparams_search=") for a in out):
        out.append("hydra.sweeper.n_trials=2")
    return out


ALL = commands(README.read_text(encoding="utf-8")) if README.is_file() else []


def params():
    for i, (command, status, line) in enumerate(ALL):
        marks = [pytest.mark.slow] if is_multirun(words(command)) else []
        if "tracking=server" in command:
            marks = [pytest.mark.slow]
        yield pytest.param(command, status, line, id=f"{i:02d}-{command[:60]}", marks=marks)


# --- the shared directory: a newcomer's clone after the quick start -------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory with ``.venv`` (this interpreter's environment) and the default run in it."""
    d = tmp_path_factory.mktemp("readme")
    (d / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return d


def environment(workdir: Path) -> dict[str, str]:
    """The environment of a shell after ``source .venv/bin/activate``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LREXP_SWEEP_", "MLFLOW_"))}
    env.update(
        VIRTUAL_ENV=str(workdir / ".venv"),
        PATH=f"{workdir / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LREXP_CACHE=str(workdir / ".cache-lrexp"),  # streamed rows' files: not the user's ~/.cache
    )
    return env


def run(workdir: Path, argv: list[str], timeout: float = RUN_TIMEOUT_S):
    return subprocess.run(
        argv, cwd=workdir, env=environment(workdir), capture_output=True, text=True, timeout=timeout
    )


def ids(workdir: Path) -> dict[str, str]:
    """Values for the README's placeholders: the newest run, the newest sweep's parent."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    if not (workdir / "mlflow.db").is_file():
        run(workdir, [".venv/bin/python", "-m", "lrexp.train", "train.epochs=2"])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lrexp")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    single = [  # a run of its own (a sweep's child may be a skipped job's pointer, with no config)
        r
        for r in runs
        if r.data.tags.get("lrexp.sweep") != "true" and "mlflow.parentRunId" not in r.data.tags
    ]
    parents = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    if not parents:
        sweep = ["-m", "optimizer=sgd,adam", "train.epochs=2"]
        run(workdir, [".venv/bin/python", "-m", "lrexp.train", *sweep])
        return ids(workdir)
    return {"<run id>": single[0].info.run_id, "<parent run id>": parents[0].info.run_id}


def write_csv_inputs(workdir: Path, argv: list[str]) -> None:
    """The CSV a ``data=csv`` example reads, with the columns it names (a user brings their own)."""
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    if opts.get("data") != "csv" or "data.path" not in opts:
        return
    if (workdir / opts["data.path"]).exists():  # made by an earlier README command
        return
    features = opts.get("data.features", "[x1,x2]").strip("[]").split(",")
    target = opts.get("data.target", "y")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(features)))
    y = 1.0 + X @ np.arange(1, len(features) + 1) + 0.1 * rng.normal(size=200)
    rows = [",".join([*features, target])]
    rows += [",".join(f"{v:.6f}" for v in [*x, t]) for x, t in zip(X, y, strict=True)]
    (workdir / opts["data.path"]).write_text("\n".join(rows) + "\n")


def serve(workdir: Path, argv: list[str]) -> None:
    """Start a blocking ``mlflow ui``/``server`` command, wait for /health, stop it."""
    port = free_port()
    argv = [*argv, "--port", str(port)]
    env = {**environment(workdir), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = workdir / f"mlflow-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{shlex.join(argv)} exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"{shlex.join(argv)} never answered /health:\n{log.read_text()}")
    finally:
        stop_group(proc)


# --- the tests -----------------------------------------------------------------------------------
def test_readme_has_commands_and_activates_the_venv_before_bare_ones():
    """The convention the other tests rely on: a bare ``python``/``mlflow`` works only in a shell
    where the README has had the user run ``source .venv/bin/activate``."""
    assert ALL, f"no ```bash commands found in {README}"
    lines = bash_lines(README.read_text(encoding="utf-8"))
    activated = False
    for line in lines:
        command, _ = split_comment(line)
        activated = activated or ACTIVATE in command
        for part in command.split(" && "):
            argv = words(part) if part.strip() else []
            bare = argv and argv[0] in ("python", "mlflow")
            assert activated or not bare, (
                f"README.md runs {part!r} before any `{ACTIVATE}`: in a new shell after the quick "
                f"start that is {'No module named lrexp' if argv[0] == 'python' else 'not found'}"
            )


def sample_summary(text: str) -> list[str]:
    """The README's sample summary: the ```text block that starts ``lrexp: `` (not an error),
    up to its first elided line (``...``), each line's spacing normalized."""
    blocks = re.findall(r"```text\n(.*?)```", text, flags=re.S)
    for block in blocks:
        if block.startswith("lrexp: ") and not block.startswith("lrexp: error"):
            kept = []
            for line in block.splitlines():
                if line.strip() in ("...", "…"):
                    break
                kept.append(" ".join(line.split()))
            return kept
    return []


def test_readme_sample_summary_is_what_the_default_run_prints(workdir):
    sample = sample_summary(README.read_text(encoding="utf-8"))
    if not sample:
        pytest.skip("README.md shows no sample summary")
    default = [c for c, _, _ in ALL if is_train(words(c)) and len(words(c)) == 3]
    assert default, "README.md has no plain `python -m lrexp.train` (the default run)"
    proc = run(workdir, words(default[0]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [" ".join(line.split()) for line in proc.stdout.splitlines()]
    missing = [line for line in sample if line not in printed]
    assert not missing, f"README's sample lines not printed by {default[0]}: {missing}\n" + (
        "\n".join(printed)
    )


@pytest.mark.parametrize(("command", "status", "line"), list(params()))
def test_readme_command_works_as_written(workdir, command, status, line):
    if " -m pytest" in f" {command}":
        pytest.skip("the test suite itself (this test is part of it)")
    if TEMPLATE.search(command):
        pytest.skip(f"a template for the user's own values: {command}")
    if any(p in command for p in PLACEHOLDERS):
        for placeholder, value in ids(workdir).items():
            command = command.replace(placeholder, value)
    unknown = re.findall(r"<[^>]+>", command)
    assert not unknown, f"README placeholder(s) {unknown} in {line!r}: known are {PLACEHOLDERS}"
    argv = words(command)
    if is_server(argv):
        serve(workdir, argv)
        return
    argv = shrink(argv)
    write_csv_inputs(workdir, argv)
    if "tracking=server" in argv:
        from test_server import mlflow_server

        with mlflow_server(f"sqlite:///{workdir / 'server.db'}", workdir) as url:
            proc = run(workdir, [*argv, f"tracking.uri={url}"])
    else:
        proc = run(workdir, argv)
    assert proc.returncode == status, (
        f"README: {line}\nran: {shlex.join(argv)}\nexit {proc.returncode}, expected {status}\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    assert not (workdir / "mlruns").exists(), "artifacts landed in ./mlruns"


@pytest.mark.slow
def test_a_small_sweep_on_a_server_prints_one_line_per_job_and_one_hint(tmp_path):
    """No JAX TPU probe, no MLflow "View run" lines, no Optuna or table set-up chatter: each job
    one line with its result, and the sweep's summary with one link to its runs."""
    from test_server import lrexp_sweep, mlflow_server

    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
        proc = lrexp_sweep(
            tmp_path, "optimizer=sgd,adam", "train.seed=0,1", "train.epochs=2",
            "tracking.log_model=false", "tracking=server", f"tracking.uri={url}",
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for noise in ("libtpu", "Unable to initialize backend", "View run", "View experiment"):
        assert noise not in out, out
    jobs = re.findall(r"^  #(\d) (\S+): test MSE ", proc.stdout, flags=re.M)
    assert sorted(int(n) for n, _ in jobs) == [0, 1, 2, 3], out
    assert out.count("/#/experiments/") == 1 and out.count("open the UI") == 1, out
    assert re.search(rf"open the UI: {re.escape(url)}/#/experiments/\d+/runs\?workflowType=", out)
    assert "θ*" not in out  # no job printed its full summary
