"""Inputs that pass the types and would then blow up (issue 15, items 9-11): each is refused in one
line naming the key before any run exists, in-process through the real Hydra composition.

The memory estimate is checked against the machine's own memory, so the cases below ask for far
more than any machine this runs on has (hundreds of GB), and a case that fits is checked too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import runs_in, typed_config

from lrexp import config, pipeline, preflight, reproduce
from lrexp.config import ConfigError, limits
from lrexp.core import verdict

INT32 = "2147483647"


def refused(*overrides: str, base_dir=".") -> ConfigError:
    """The error that validating the composed config raises (and that a run would print)."""
    with pytest.raises(ConfigError) as info:
        pipeline.prepare(typed_config(*overrides), base_dir)
    assert "\n" not in str(info.value)
    return info.value


# --- counts the loop holds in int32 -----------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.epochs=4294967301"], "train.epochs"),  # wrapped to 5 epochs before
        (["data.n=10000000000"], "data.n"),  # a native abort (exit 134) before
        (["train.steps=2147483648", "train.batch_size=null"], "train.steps"),
        (["train.batch_size=2147483648"], "train.batch_size"),
        (["schedule=cosine", "schedule.decay_steps=4294967296"], "schedule.decay_steps"),
        (["schedule=warmup_cosine", "schedule.warmup_steps=2147483648"], "schedule.warmup_steps"),
        (["train.seed=9223372036854775808"], "train.seed"),
    ],
)
def test_counts_past_int32_are_refused_naming_the_range(overrides, key):
    e = refused(*overrides)
    assert e.key == key
    assert INT32 in str(e) or key == "train.seed"


def test_the_largest_int32_count_is_allowed():
    top = [f"schedule.decay_steps={INT32}", f"tracking.max_curve_points={INT32}"]
    config.validate(typed_config("schedule=cosine", *top))


def test_epochs_times_steps_an_epoch_past_int32_is_refused():
    cfg = typed_config("train.epochs=2000", "train.batch_size=1")
    with pytest.raises(ConfigError, match=r"train.epochs=2000: makes 3200000000 steps"):
        config.validate_sizes(cfg, n_rows=2_000_000, n_features=1, n_train=1_600_000)
    config.validate_sizes(cfg, n_rows=2000, n_features=1, n_train=1600)


# --- memory ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.n=100000", "train.folds=100000"], "train.folds"),  # 5 GB in 2 minutes before
        (["data.n=2000000000"], "data.n"),
        (["train.epochs=2000000000"], "train.epochs"),  # a history row per epoch
        (["optimizer=lbfgs", "optimizer.memory_size=100000000"], "optimizer.memory_size"),
    ],
)
def test_a_run_that_would_exhaust_memory_is_refused_naming_the_key(overrides, key):
    e = refused(*overrides)
    assert e.key == key
    if key != "optimizer.memory_size":  # bounded outright: past 10,000 it only costs memory
        assert "needs ~" in str(e) and "this machine has" in str(e)


def test_the_estimate_adds_its_terms_and_is_refused_above_the_share_of_memory():
    terms = limits.estimate(
        n_rows=1000, n_features=9, splits=5, history_rows=99, memory_size=10, itemsize=4
    )
    assert terms == {
        "data": 8 * 1000 * 10 * limits.COPIES,
        "splits": 8 * 1000 * 5,
        "history": 8 * 100 * 15 * 5,
        "memory": 3 * 10 * 10 * 4 * 2,
    }
    total = sum(terms.values())
    assert limits.too_big(terms, memory=math.ceil(total / limits.SHARE)) is None
    assert limits.too_big(terms, memory=int(total / limits.SHARE) - 1)[0] == "data"
    assert 1e9 < limits.machine_memory() < 1e15


def test_a_data_file_larger_than_memory_allows_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("a,y\n1,2\n2,3\n3,5\n")
    monkeypatch.setattr(limits, "machine_memory", lambda: 10)  # 10 bytes: the file is 20
    e = refused("data=csv", f"data.path={path}", "data.target=y")
    assert e.key == "data.path" and "this machine has" in str(e)


# --- values float64 cannot sum, files that are not files ---------------------------------------
def test_a_target_whose_squares_overflow_float64_is_refused_not_called_divergence(tmp_path):
    e = refused("data.weights=[1e200]")
    assert e.key == "data.weights" and "float64's largest number" in str(e)
    path = tmp_path / "huge.csv"
    rows = [f"{i},{(i % 7 + 1) * 1e307}" for i in range(20)]
    path.write_text("a,y\n" + "\n".join(rows) + "\n")
    e = refused("data=csv", f"data.path={path}", "data.target=y")
    assert e.key == "data.target" and "rescale the data" in str(e)


def test_a_symlink_loop_is_no_file_not_a_traceback(tmp_path):
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    e = refused("data=csv", "data.path=loop.csv", "data.target=y", base_dir=tmp_path)
    assert e.key == "data.path" and "must be an existing CSV file" in str(e)


def test_a_run_dir_that_cannot_be_made_is_refused_in_a_line(tmp_path):
    (tmp_path / "file").write_text("")
    line = preflight.error([f"hydra.run.dir={tmp_path}/file/run", "tracking.enabled=false"])
    assert line.startswith(f"hydra.run.dir={tmp_path}/file/run: must be a directory")
    assert preflight.error([f"hydra.run.dir={tmp_path}/ok/run", "tracking.enabled=false"]) is None
    assert (tmp_path / "ok" / "run").is_dir()


def test_a_non_finite_excess_advises_rescaling_not_epochs_or_lr():
    facts = verdict.Facts(optimizer="sgd", lr=0.1, epochs=10)
    t = verdict.Trend("unknown", math.nan)
    assert verdict.advise(math.nan, t, facts, diverged=False, tol_met=False) == [
        "rescale the data: its MSE or variance is not a finite float64 number"
    ]


# --- reproduce reads only the files its command line names -------------------------------------
@pytest.fixture(scope="module")
def csv_run(store_uri, tmp_path_factory):
    """A finished run on a small CSV, and a copy of it whose logged data.path names a secret."""
    import json

    import yaml
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(1)
    a = rng.normal(size=40)
    data = base / "data.csv"
    data.write_text("a,y\n" + "".join(f"{x},{1 + 2 * x}\n" for x in a))
    secret = base / "secret.csv"
    secret.write_text("SECRET_a,SECRET_y\n" + "".join(f"{x},{x}\n" for x in a))
    name = f"limits-{os.getpid()}"
    client = MlflowClient(store_uri)
    exp = client.create_experiment(name, artifact_location=str(base / "artifacts"))
    over = [f"tracking.uri={store_uri}", f"tracking.experiment={name}", "data=csv",
            f"data.path={data}", "data.target=y", "train.epochs=3",
            "tracking.log_model=false"]  # fmt: skip
    out = pipeline.run(typed_config(*over), base_dir=base, overrides=over)
    logged = client.download_artifacts(out.run_id, "config/config.yaml", str(base / "dl"))
    cfg = yaml.safe_load(Path(logged).read_text())
    cfg["data"]["path"] = str(secret)
    copy = client.create_run(exp, run_name="tampered").info.run_id
    client.log_text(copy, yaml.safe_dump(cfg), "config/config.yaml")
    client.log_text(copy, json.dumps({"theta": out.theta.tolist()}), "theta.json")
    client.set_terminated(copy, "FINISHED")
    return {"uri": store_uri, "name": name, "run": out.run_id, "copy": copy, "data": data,
            "secret": secret}  # fmt: skip


def _reproduce(capsys, run_id, uri, *flags):
    code = reproduce.main([run_id, "--uri", uri, "--no-track", *flags])
    return code, capsys.readouterr()


def test_reproduce_reads_no_logged_file_unless_its_command_line_names_it(csv_run, capsys):
    before = len(runs_in(csv_run["uri"], csv_run["name"]))
    code, out = _reproduce(capsys, csv_run["copy"], csv_run["uri"])
    assert code == 2 and "--data PATH" in out.err and len(out.err.strip().splitlines()) == 1
    assert "SECRET_a" not in out.err + out.out
    assert len(runs_in(csv_run["uri"], csv_run["name"])) == before


def test_reproduce_with_data_reads_that_file_and_matches(csv_run, capsys):
    code, out = _reproduce(capsys, csv_run["run"], csv_run["uri"], "--data", str(csv_run["data"]))
    assert code == 0 and "θ matches" in out.out


def test_reproduce_errors_quote_nothing_of_the_named_file(csv_run, capsys):
    code, out = _reproduce(capsys, csv_run["run"], csv_run["uri"], "--data", str(csv_run["secret"]))
    assert code == 2 and out.err.startswith("lrexp: error: data.target='y': must be a column")
    assert "SECRET" not in out.err and len(out.err.strip().splitlines()) == 1
