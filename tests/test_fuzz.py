"""Fuzzing with Hypothesis: overrides, input files, and whole command lines.

Properties (issue 15):
  (a) any override strings compose into a config that passes every check, or are refused with a
      one-line ``key=value: allowed`` (what ``python -m lrexp.train`` prints before exit 2);
  (b) any file bytes, encodings, headers and numbers load as a finite table, or are refused with a
      one-line :class:`TableError` that quotes no more of the file than a capped cell;
  (c) drawn end-to-end command lines exit 0 (a FINISHED run), 2 (one line, no run) or 3 (diverged:
      its run ended FAILED), within a time and memory bound, and never leave a RUNNING run.

Two profiles: ``fast`` (the default run, derandomized: the same inputs every time, about 30 s)
and ``long`` (``CI_FULL=1 pytest -m full``: random inputs, minutes). Each test prints how many
inputs it tried (``pytest tests/test_fuzz.py -n 0 -s``), and records it as a junit property.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import compose_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrexp
from lrexp import config, preflight
from lrexp.core import tables
from lrexp.core.table_files import TableError

COUNTS = {  # examples a test tries, per profile
    "fast": {"overrides": 40, "files": 150, "cli": 1},
    "long": {"overrides": 800, "files": 5000, "cli": 25},
}
for _name, _derandomize in (("fast", True), ("long", False)):
    settings.register_profile(
        _name,
        deadline=None,
        database=None,  # no .hypothesis folder in the checkout
        derandomize=_derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
PROFILES = ["fast", pytest.param("long", marks=pytest.mark.full)]
CLI_SECONDS = 120  # one command line's wall-time bound
CLI_MEMORY = 6 << 30  # its address space (RLIMIT_AS): a run past it fails, which is a failure here
CLI_RSS = 3 << 30  # its peak resident memory
SOURCE = str(Path(lrexp.__file__).resolve().parents[1])


def fuzz(profile: str, name: str, strategy, check, record_property) -> None:
    """Run ``check`` on ``COUNTS[profile][name]`` examples of ``strategy``; print the count."""
    tried = [0]

    @settings(settings.get_profile(profile), max_examples=COUNTS[profile][name])
    @given(strategy)
    def inner(example):
        tried[0] += 1
        check(example)

    inner()
    record_property(f"fuzz_{name}_{profile}", tried[0])
    print(f"\nfuzz: {name} [{profile}]: {tried[0]} inputs tried, all held")


# --- values at and beyond their limits ------------------------------------------------------------
EDGE_INTS = [0, 1, 2, 3, -1, 2**31 - 1, 2**31, 2**32 + 5, 2**63 - 1, 2**63, 10**30]
EDGE_FLOATS = ["0", "-0.0", "1e-320", "5e-324", "1e308", "-1e308", "1.8e308", "nan", "inf", "-inf"]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**70), 2**70)).map(str)
floats = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=12
).map(lambda s: s.replace("\n", " "))
values = st.one_of(
    ints,
    floats,
    st.sampled_from(["null", "true", "false", "''", "[]", "[1,2]", "???", "${oops}", "[1e200]"]),
    words,
    st.lists(floats, min_size=0, max_size=4).map(lambda v: f"[{','.join(v)}]"),
)
KEYS = [
    "data.n", "data.noise", "data.bias", "data.weights", "data.standardize", "data.collinearity",
    "optimizer.lr", "optimizer.momentum", "optimizer.b1", "optimizer.b2", "optimizer.eps",
    "optimizer.memory_size", "optimizer.weight_decay", "schedule.decay_steps", "schedule.alpha",
    "schedule.warmup_steps", "schedule.transition_steps", "schedule.decay_rate", "train.epochs",
    "train.batch_size", "train.steps", "train.tol", "train.test_fraction", "train.folds",
    "train.dtype", "train.seed", "train.shuffle_block", "train.cv", "train.reduction",
    "tracking.max_curve_points", "tracking.experiment", "data.nosuchkey",
]  # fmt: skip
GROUPS = {
    "data": ["linear", "collinear", "nosuch", "linear_schema"],
    "optimizer": ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "lion", "lbfgs"],
    "schedule": ["constant", "exponential", "cosine", "warmup_cosine"],
}
choices = st.sampled_from([f"{g}={o}" for g, opts in GROUPS.items() for o in opts])
overrides = st.lists(
    st.one_of(choices, st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), values)),
    min_size=1,
    max_size=4,
).map(lambda o: [*sorted(o, key=lambda s: "." in s.split("=")[0]), "tracking.enabled=false"])


def one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message
    assert "=" in message.split(":")[0] or message.startswith("cannot parse"), message


def check_overrides(over: list[str]) -> None:
    problem = preflight.error(over)
    if problem is not None:
        one_line(problem)
        return
    try:  # composed: every value is checked before a run exists (as pipeline.prepare does)
        config.validate(config.to_object(compose_config(*over)))
    except config.ConfigError as e:
        one_line(str(e))
    except Exception as e:  # only MISSING values may pass preflight: the run names the key
        assert type(e).__name__ == "MissingMandatoryValue", (over, repr(e))


@pytest.mark.parametrize("profile", PROFILES)
def test_overrides_compose_into_a_valid_config_or_a_one_line_error(profile, record_property):
    fuzz(profile, "overrides", overrides, check_overrides, record_property)


# --- input files -------------------------------------------------------------------------------
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "-1.7e308", "1e-320", "2e308", "NaN", "", " ", "NA", "null", "1,5"]),
    st.integers(-(10**30), 10**30).map(str),
    words,
)
HEADERS = st.one_of(
    words,
    st.sampled_from(["y", "", " y ", '"y"', "a,b", "é", "\ufeffy", "x" * 1000]),
)
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]


@st.composite
def csv_files(draw) -> tuple[bytes, str, str]:
    """(bytes, suffix, target): a table of drawn cells, delimiter and encoding, or random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter: raw bytes, under any name
        return (
            draw(st.binary(max_size=2000)),
            draw(st.sampled_from([".csv", ".tsv", ".parquet"])),
            "y",
        )
    width = draw(st.integers(1, 5))
    names = [draw(HEADERS) for _ in range(width - 1)] + ["y"]
    rows = draw(st.lists(st.lists(NUMBERS, min_size=width, max_size=width + 1), max_size=12))
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    lines = [sep.join(names)] + [sep.join(r) for r in rows]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    encoding = draw(st.sampled_from(ENCODINGS))
    data = text.encode(encoding, errors="replace")
    return data, ".tsv" if sep == "\t" and draw(st.booleans()) else ".csv", "y"


def check_file(example: tuple[bytes, str, str], folder: Path) -> None:
    data, suffix, target = example
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        table = tables.read_table(path, target=target, categorical="onehot", dropna=True)
    except TableError as e:
        one_line(str(e))
        assert len(str(e)) < 3000, str(e)[:200]  # capped lists, cut cells
        return
    assert table.X.shape[0] == table.y.shape[0] >= 1
    assert table.X.dtype == table.y.dtype == "float64"
    assert (abs(table.X) <= 1.8e308).all() and (abs(table.y) <= 1.8e308).all()  # finite


@pytest.mark.parametrize("profile", PROFILES)
def test_any_file_loads_as_a_finite_table_or_a_one_line_error(profile, tmp_path, record_property):
    fuzz(profile, "files", csv_files(), lambda e: check_file(e, tmp_path), record_property)


# --- whole command lines ------------------------------------------------------------------------
cli_ints = st.sampled_from([*EDGE_INTS, 10, 50]).map(str)  # no 199 folds of 200 rows: slow
CLI_VALUES = {  # keys whose values cannot make a run long; the run itself is small
    "optimizer.lr": floats,
    "data.bias": floats,
    "data.noise": floats,
    "data.weights": st.lists(floats, min_size=1, max_size=3).map(lambda v: f"[{','.join(v)}]"),
    "train.folds": cli_ints,
    "train.batch_size": cli_ints,
    "optimizer.memory_size": cli_ints,
    "train.seed": cli_ints,
}
cli_lines = st.tuples(
    st.sampled_from(["optimizer=sgd", "optimizer=adam", "optimizer=lbfgs"]),
    st.lists(
        st.sampled_from(sorted(CLI_VALUES)).flatmap(
            lambda k: CLI_VALUES[k].map(lambda v: f"{k}={v}")
        ),
        min_size=1,
        max_size=2,
    ),
).map(lambda t: [t[0], *t[1], "data.n=200", "train.epochs=3", "tracking.log_model=false"])


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY, CLI_MEMORY))


def statuses(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return [s for (s,) in con.execute("SELECT status FROM runs")]


def _sample_peak(pid: int, done: threading.Event, peak: list[int]) -> None:
    """The process's own resident high-water mark (VmHWM), sampled until it exits. (A child's
    ru_maxrss would not do: Linux carries the forking test process's peak into it.)"""
    while not done.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        done.wait(0.05)


def check_cli(over: list[str], folder: Path) -> None:
    db = folder / "mlflow.db"
    before = statuses(db)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrexp.train", f"tracking.uri=sqlite:///{db}", *over],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": SOURCE},  # this checkout's lrexp, from any folder
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_memory,
    )
    done, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_sample_peak, args=(proc.pid, done, peak), daemon=True)
    sampler.start()
    try:
        _, stderr = proc.communicate(timeout=CLI_SECONDS)  # (text: str)
    finally:
        done.set()
        proc.kill()
        sampler.join()
    assert time.monotonic() - start < CLI_SECONDS
    after = statuses(db)
    assert "RUNNING" not in after, (over, stderr[-2000:])
    err = stderr.strip().splitlines()
    if proc.returncode == 2:
        assert len(err) == 1 and err[0].startswith("lrexp: error: "), (over, stderr[-2000:])
        assert len(after) == len(before), over  # no run
    else:
        assert proc.returncode in (0, 3), (over, proc.returncode, stderr[-2000:])
        ended = "FINISHED" if proc.returncode == 0 else "FAILED"
        assert after[len(before) :] == [ended], (over, after)
    assert 0 < peak[0] < CLI_RSS, (over, peak[0])  # the training process's peak


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES)
def test_command_lines_finish_or_fail_in_a_line_never_running(profile, tmp_path, record_property):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    fuzz(profile, "cli", cli_lines, lambda o: check_cli(o, tmp_path), record_property)
