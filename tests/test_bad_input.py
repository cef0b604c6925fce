"""A catalogue of bad input: each case gives one line naming the key, the value, what is allowed.

Every case runs ``lrexp.train.cli()`` in-process (as ``python -m lrexp.train`` does) in a fresh
working directory, and must exit with status 2, print exactly one ``lrexp: error: key=value: what is
allowed`` line on stderr, no traceback, and create no MLflow store, so no run. A few cases also run
as real subprocesses to prove the exit status of the actual command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
from hydra.core.global_hydra import GlobalHydra

from lrexp import train


class Case(NamedTuple):
    overrides: list[str]
    key: str  # the key the error line must name: `lrexp: error: <key>=<value>: ...`
    value: str  # the offending value as shown (quotes stripped; CSV paths may be shown resolved)
    allowed: str  # a fragment of what the line says is allowed


def _rows(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def _constant_b(n: int = 30) -> str:
    return _rows("a,b,y", *(f"{i},2,{(3 * i) % 7}" for i in range(n)))


CSV_FILES = {
    "ok.csv": _rows("a,b,y", *(f"{i},{(i * 7) % 5},{(i * 3) % 11}" for i in range(1, 11))),
    "empty.csv": "",
    "header.csv": _rows("a,b,y"),
    "ragged.csv": _rows("a,b,y", "1,2,3", "2,3", "3,1,4", "4,5,9", "5,2,7"),
    "text.csv": _rows("a,b,y", "1,2,3", "2,abc,5", "3,1,4", "4,5,9", "5,2,7"),
    "hole.csv": _rows("a,b,y", "1,2,3", "2,,5", "3,1,4", "4,5,9", "5,2,7"),
    "nan.csv": _rows("a,b,y", "1,2,3", "2,nan,5", "3,1,4", "4,5,9", "5,2,7"),
    "inf.csv": _rows("a,b,y", "1,2,3", "2,inf,5", "3,1,4", "4,5,9", "5,2,7"),
    "dup.csv": _rows("a,a,y", "1,2,3", "2,3,5", "3,1,4"),
    "const.csv": _constant_b(),
    "few.csv": _rows("a,b,c,d,y", "1,2,3,4,5", "2,3,1,5,6", "3,1,2,2,7"),
}


def write_csv_files(directory: Path) -> None:
    for name, text in CSV_FILES.items():
        (directory / name).write_text(text)
    (directory / "adir").mkdir()


CSV = ["data=csv", "data.target=y"]

CASES = {
    # --- composition: options, keys, types, syntax (checked before Hydra runs) ---------------
    "unknown-optimizer": Case(
        ["optimizer=nadam"], "optimizer", "nadam", "no such option; allowed: adagrad, adam"
    ),
    "unknown-data-option": Case(
        ["data=parquet"], "data", "parquet", "no such option; allowed: collinear, csv, file, linear"
    ),
    "unknown-schedule": Case(
        ["schedule=linear"], "schedule", "linear", "no such option; allowed: constant, cosine"
    ),
    "misspelled-key": Case(
        ["train.epoch=3"], "train.epoch", "3", "no such key in train; allowed: epochs, batch_size"
    ),
    "knob-of-another-optimizer": Case(
        ["optimizer=sgd", "optimizer.b1=0.9"],
        "optimizer.b1",
        "0.9",
        "no such key in optimizer; allowed: name, lr",
    ),
    "epochs-not-a-number": Case(
        ["train.epochs=abc"], "train.epochs", "abc", "could not be converted to Integer"
    ),
    "epochs-not-an-integer": Case(
        ["train.epochs=1.5"], "train.epochs", "1.5", "could not be converted to Integer"
    ),
    "lr-not-a-number": Case(
        ["optimizer.lr=fast"], "optimizer.lr", "fast", "could not be converted to Float"
    ),
    "lr-null": Case(["optimizer.lr=null"], "optimizer.lr", "null", "is not Optional"),
    "weights-not-a-list": Case(
        ["data.weights=abc"], "data.weights", "abc", "is not a ListConfig, list or tuple"
    ),
    "standardize-not-a-bool": Case(
        ["data.standardize=maybe"], "data.standardize", "maybe", "is not a valid bool"
    ),
    "added-top-level-key": Case(
        ["+foo=1"], "foo", "1", "unknown key; allowed: data, optimizer, schedule, train, tracking"
    ),
    "added-target-key": Case(
        ["+optimizer._target_=os.system"],
        "optimizer._target_",
        "os.system",
        "unknown key; allowed: name, lr",
    ),
    "parse-error": Case(["train.epochs=[1"], "train.epochs", "[1", "parse"),
    # --- values: ranges checked after composition, before anything is created ---------------
    "lr-negative": Case(["optimizer.lr=-1"], "optimizer.lr", "-1.0", "must be a finite number > 0"),
    "curve-points-too-few": Case(
        ["tracking.max_curve_points=2"], "tracking.max_curve_points", "2", "integer >= 3"
    ),
    "sweep-model-unknown": Case(
        ["tracking.sweep_model=all"], "tracking.sweep_model", "all", "one of: best, every"
    ),
    "lr-zero": Case(["optimizer.lr=0"], "optimizer.lr", "0.0", "must be a finite number > 0"),
    "lr-nan": Case(["optimizer.lr=nan"], "optimizer.lr", "nan", "must be a finite number > 0"),
    "lr-inf": Case(["optimizer.lr=inf"], "optimizer.lr", "inf", "must be a finite number > 0"),
    "lr-minus-inf": Case(
        ["optimizer.lr=-inf"], "optimizer.lr", "-inf", "must be a finite number > 0"
    ),
    "epochs-zero": Case(["train.epochs=0"], "train.epochs", "0", "must be an integer >= 1"),
    "steps-zero": Case(
        ["train.batch_size=null", "train.steps=0"],
        "train.steps",
        "0",
        "must be null (use train.epochs) or an integer >= 1",
    ),
    "steps-with-mini-batches": Case(
        ["train.steps=5"], "train.steps", "5", "applies to full-batch training only"
    ),
    "shuffle-block-not-dividing-the-batch": Case(
        ["train.shuffle_block=3"], "train.shuffle_block", "3", "must divide train.batch_size (10)"
    ),
    "shuffle-block-zero": Case(
        ["train.shuffle_block=0"], "train.shuffle_block", "0", "must be an integer >= 1"
    ),
    "batch-zero": Case(
        ["train.batch_size=0"],
        "train.batch_size",
        "0",
        "must be null (full batch) or an integer >= 1",
    ),
    "batch-negative": Case(
        ["train.batch_size=-3"],
        "train.batch_size",
        "-3",
        "must be null (full batch) or an integer >= 1",
    ),
    "batch-larger-than-data": Case(
        ["train.batch_size=100000"],
        "train.batch_size",
        "100000",
        "must be <= the number of training rows (288), or null",
    ),
    "fewer-rows-than-features": Case(
        ["data.n=5"], "data.n", "5", "must exceed the number of features + 1 (6)"
    ),
    "noise-negative": Case(["data.noise=-1"], "data.noise", "-1.0", "must be a finite number >= 0"),
    "weights-empty": Case(
        ["data.weights=[]"], "data.weights", "[]", "must be a non-empty list of finite numbers"
    ),
    "weights-nan": Case(
        ["data.weights=[1,nan]"],
        "data.weights",
        "[1.0, nan]",
        "must be a non-empty list of finite numbers",
    ),
    "bias-nan": Case(["data.bias=nan"], "data.bias", "nan", "must be a finite number"),
    "test-fraction-zero": Case(
        ["train.test_fraction=0"], "train.test_fraction", "0.0", "must be a number in (0, 1)"
    ),
    "test-fraction-one": Case(
        ["train.test_fraction=1.0"], "train.test_fraction", "1.0", "must be a number in (0, 1)"
    ),
    "folds-one": Case(
        ["train.folds=1"], "train.folds", "1", "must be null (single split) or an integer >= 2"
    ),
    "folds-more-than-rows": Case(
        ["train.folds=1000"], "train.folds", "1000", "must be <= the number of rows (360)"
    ),
    "dtype-float16": Case(
        ["train.dtype=float16"], "train.dtype", "float16", "must be one of: float32, float64"
    ),
    "collinearity-one": Case(
        ["data=collinear", "data.collinearity=1.0"],
        "data.collinearity",
        "1.0",
        "must be a number in [0, 1)",
    ),
    "adam-b2-above-one": Case(
        ["optimizer=adam", "optimizer.b2=1.5"], "optimizer.b2", "1.5", "must be a number in [0, 1)"
    ),
    "adam-eps-zero": Case(
        ["optimizer=adam", "optimizer.eps=0"], "optimizer.eps", "0.0", "must be a finite number > 0"
    ),
    "momentum-one": Case(
        ["optimizer=momentum", "optimizer.momentum=1.0"],
        "optimizer.momentum",
        "1.0",
        "must be a number in [0, 1)",
    ),
    "adamw-weight-decay-negative": Case(
        ["optimizer=adamw", "optimizer.weight_decay=-1"],
        "optimizer.weight_decay",
        "-1.0",
        "must be a finite number >= 0",
    ),
    "rmsprop-decay-one": Case(
        ["optimizer=rmsprop", "optimizer.decay=1"],
        "optimizer.decay",
        "1.0",
        "must be a number in [0, 1)",
    ),
    "adagrad-accumulator-negative": Case(
        ["optimizer=adagrad", "optimizer.initial_accumulator_value=-1"],
        "optimizer.initial_accumulator_value",
        "-1.0",
        "must be a finite number >= 0",
    ),
    "lbfgs-memory-size-zero": Case(
        ["optimizer=lbfgs", "optimizer.memory_size=0"],
        "optimizer.memory_size",
        "0",
        "must be an integer >= 1",
    ),
    "tol-negative": Case(
        ["train.tol=-0.1"], "train.tol", "-0.1", "must be null (off) or a finite number >= 0"
    ),
    "seed-negative": Case(["train.seed=-1"], "train.seed", "-1", "must be an integer >= 0"),
    "exponential-decay-rate-zero": Case(
        ["schedule=exponential", "schedule.decay_rate=0"],
        "schedule.decay_rate",
        "0.0",
        "must be a finite number > 0",
    ),
    "exponential-transition-steps-zero": Case(
        ["schedule=exponential", "schedule.transition_steps=0"],
        "schedule.transition_steps",
        "0",
        "must be an integer >= 1",
    ),
    "cosine-alpha-two": Case(
        ["schedule=cosine", "schedule.alpha=2"],
        "schedule.alpha",
        "2.0",
        "must be a number in [0, 1]",
    ),
    "cosine-decay-steps-zero": Case(
        ["schedule=cosine", "schedule.decay_steps=0"],
        "schedule.decay_steps",
        "0",
        "must be null (all steps) or an integer >= 1",
    ),
    "warmup-steps-negative": Case(
        ["schedule=warmup_cosine", "schedule.warmup_steps=-1"],
        "schedule.warmup_steps",
        "-1",
        "must be an integer >= 0",
    ),
    # --- CSV data (files written to the working directory, paths relative to it) -------------
    "csv-path-not-given": Case(["data=csv"], "data.path", "???", "is required"),
    "csv-target-not-given": Case(
        ["data=csv", "data.path=ok.csv"], "data.target", "???", "is required"
    ),
    "csv-path-empty": Case([*CSV, "data.path="], "data.path", "", "must name a CSV file"),
    "csv-file-missing": Case(
        [*CSV, "data.path=nowhere.csv"], "data.path", "nowhere.csv", "must be an existing CSV file"
    ),
    "csv-path-is-a-directory": Case(
        [*CSV, "data.path=adir"], "data.path", "adir", "must be an existing CSV file"
    ),
    "csv-empty-file": Case(
        [*CSV, "data.path=empty.csv"],
        "data.path",
        "empty.csv",
        "is empty: needs a header row and data rows",
    ),
    "csv-header-only": Case(
        [*CSV, "data.path=header.csv"],
        "data.path",
        "header.csv",
        "but no data rows",
    ),
    "csv-ragged-line": Case(
        [*CSV, "data.path=ragged.csv"],
        "data.path",
        "ragged.csv",
        "line 3 has 2 fields, the header has 3",
    ),
    "csv-non-numeric-cell": Case(
        [*CSV, "data.path=text.csv"],
        "data.categorical",
        "error",
        "'abc' (column 'b', line 3) is not a number",
    ),
    "csv-missing-cell": Case(
        [*CSV, "data.path=hole.csv"],
        "data.dropna",
        "False",
        "the first '' (column 'b', line 3): set data.dropna=true",
    ),
    "csv-nan-cell": Case(
        [*CSV, "data.path=nan.csv"],
        "data.dropna",
        "False",
        "the first 'nan' (column 'b', line 3): set data.dropna=true",
    ),
    "csv-inf-cell": Case(
        [*CSV, "data.path=inf.csv"],
        "data.path",
        "inf.csv",
        "'inf' (column 'b', line 3) is not a finite number",
    ),
    "csv-duplicate-columns": Case(
        [*CSV, "data.path=dup.csv"], "data.path", "dup.csv", "has duplicate column names"
    ),
    "csv-target-not-a-column": Case(
        ["data=csv", "data.path=ok.csv", "data.target=price"],
        "data.target",
        "price",
        "must be a column of ok.csv: ['a', 'b', 'y']",
    ),
    "csv-feature-not-a-column": Case(
        [*CSV, "data.path=ok.csv", "data.features=[a,zz]"],
        "data.features",
        "['a', 'zz']",
        "['zz'] not among the columns of ok.csv",
    ),
    "csv-target-among-features": Case(
        [*CSV, "data.path=ok.csv", "data.features=[a,y]"],
        "data.features",
        "['a', 'y']",
        "must not contain the target column 'y'",
    ),
    "csv-features-empty": Case(
        [*CSV, "data.path=ok.csv", "data.features=[]"],
        "data.features",
        "[]",
        "must be null (all other columns) or a non-empty list of distinct names",
    ),
    "csv-features-repeated": Case(
        [*CSV, "data.path=ok.csv", "data.features=[a,a]"],
        "data.features",
        "['a', 'a']",
        "a non-empty list of distinct names",
    ),
    "csv-constant-feature": Case(
        [*CSV, "data.path=const.csv"],
        "data.features",
        "['a', 'b']",
        "column(s) ['b'] are constant in the training rows",
    ),
    "csv-fewer-rows-than-features": Case(
        [*CSV, "data.path=few.csv"],
        "data.path",
        "few.csv",
        "has 3 rows for 4 features; needs at least 6",
    ),
    "csv-batch-larger-than-data": Case(
        [*CSV, "data.path=ok.csv", "train.batch_size=100"],
        "train.batch_size",
        "100",
        "must be <= the number of training rows (8), or null",
    ),
    "csv-folds-more-than-rows": Case(
        [*CSV, "data.path=ok.csv", "train.folds=20"],
        "train.folds",
        "20",
        "must be <= the number of rows (10)",
    ),
}


def check_refused(case: Case, code: object, stderr: str, cwd: Path) -> None:
    """Exit status 2, one error line naming key, value and what is allowed, no store."""
    assert code == 2, f"exit status {code!r}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lrexp: error:")]
    assert len(errors) == 1, stderr
    (line,) = errors
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1] == line, f"the error continues past its line:\n{stderr}"
    head, _, allowed = line.removeprefix("lrexp: error: ").partition(": ")
    assert head.startswith(f"{case.key}="), f"does not name {case.key}: {line}"
    shown = head.removeprefix(f"{case.key}=").strip("'\"")
    # CSV loaders show the path resolved against the launch directory; either form names it.
    assert shown in (case.value, str((cwd / case.value).resolve())), (
        f"does not name the value {case.value!r}: {line}"
    )
    assert case.allowed in allowed, f"does not say {case.allowed!r}: {line}"
    assert not (cwd / "mlflow.db").exists(), "an MLflow store was created"
    assert not list(cwd.rglob("mlflow.db")), "an MLflow store was created under the launch dir"
    assert not (cwd / "mlruns").exists(), "an MLflow file store was created"


# Hydra's logging set-up (logging.config.dictConfig) shuts down every logging handler in the
# process, and absl's then closes the stream it holds: pytest's capture file. In-process runs
# therefore leave logging alone; the subprocess tests below run the command line untouched.
IN_PROCESS = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Run ``python -m lrexp.train <overrides>`` in-process from ``tmp_path``; (status, stderr)."""
    write_csv_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")

    def run(overrides: list[str]) -> tuple[object, str]:
        argv = [
            "lrexp.train",
            *overrides,
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.run.dir={tmp_path}/outputs",
            *IN_PROCESS,
        ]
        monkeypatch.setattr(sys, "argv", argv)
        GlobalHydra.instance().clear()
        try:
            with pytest.raises(SystemExit) as exit_:
                train.cli()
        finally:
            GlobalHydra.instance().clear()
        return exit_.value.code, capsys.readouterr().err

    return run


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line_without_a_run(name, run_cli, tmp_path):
    case = CASES[name]
    code, stderr = run_cli(case.overrides)
    check_refused(case, code, stderr, tmp_path)


# --- the real command line, as a user types it (default tracking store in the launch dir) ----
SUBPROCESS_CASES = ["unknown-optimizer", "lr-negative", "csv-non-numeric-cell"]


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}

    def launch(name: str) -> tuple[subprocess.CompletedProcess, Path]:
        cwd = tmp_path_factory.mktemp(name)
        write_csv_files(cwd)
        proc = subprocess.run(
            [sys.executable, "-m", "lrexp.train", *CASES[name].overrides],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc, cwd

    with ThreadPoolExecutor(len(SUBPROCESS_CASES)) as pool:
        return dict(zip(SUBPROCESS_CASES, pool.map(launch, SUBPROCESS_CASES), strict=True))


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_command_line_exits_2_without_a_run(name, subprocess_results):
    proc, cwd = subprocess_results[name]
    check_refused(CASES[name], proc.returncode, proc.stderr, cwd)
