"""python -m lrexp.reproduce: re-run a logged run from its logged config, and compare θ.

One real finished run in the session's SQLite store is reproduced in-process and as a subprocess.
The logged config is untrusted input: tampered copies of it (made with MLflow's own client) must be
refused before any run starts, and a `_target_` in it must never be instantiated.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import typed_config
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lrexp import config, pipeline, reproduce
from lrexp.config import ConfigError

SMALL = ["train.epochs=3", "tracking.log_model=false"]


@dataclass(frozen=True)
class Logged:
    uri: str
    experiment_id: str
    run_id: str
    theta: list[float]
    config: dict  # config/config.yaml as plain values
    tags: dict[str, str]
    base_dir: Path


@pytest.fixture(scope="module")
def logged(store_uri, tmp_path_factory) -> Logged:
    """A finished run with the default config, small."""
    base = tmp_path_factory.mktemp("reproduce")
    client = MlflowClient(store_uri)
    name = f"test-{uuid.uuid4().hex[:12]}"
    exp_id = client.create_experiment(name, artifact_location=str(base / "artifacts"))
    overrides = [f"tracking.uri={store_uri}", f"tracking.experiment={name}", *SMALL]
    outcome = pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
    local = client.download_artifacts(outcome.run_id, "config/config.yaml", str(base / "dl"))
    tags = client.get_run(outcome.run_id).data.tags
    theta = outcome.theta.tolist()
    cfg = yaml.safe_load(Path(local).read_text())
    return Logged(store_uri, exp_id, outcome.run_id, theta, cfg, tags, base)


def run_ids(logged: Logged) -> set[str]:
    runs = MlflowClient(logged.uri).search_runs([logged.experiment_id])
    return {r.info.run_id for r in runs}


def logged_copy(logged: Logged, cfg: dict, *, theta=None, tags=None, without=()) -> str:
    """A FINISHED run whose artifacts are ``cfg`` and ``theta``, as if lrexp had logged them."""
    client = MlflowClient(logged.uri)
    all_tags = {**logged.tags, **(tags or {})}
    all_tags = {
        k: v for k, v in all_tags.items() if not k.startswith("mlflow.") and k not in without
    }
    run_id = client.create_run(logged.experiment_id, run_name="copy", tags=all_tags).info.run_id
    client.log_text(run_id, yaml.safe_dump(cfg), "config/config.yaml")
    client.log_text(run_id, json.dumps({"theta": theta or logged.theta}), "theta.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def edited(cfg: dict, dotted: str, value) -> dict:
    """A deep copy of ``cfg`` with ``dotted`` (``optimizer.lr``) set to ``value``."""
    out = copy.deepcopy(cfg)
    *path, last = dotted.split(".")
    node = out
    for key in path:
        node = node[key]
    node[last] = value
    return out


# --- config.from_container: the logged config goes through the command line's schemas ----------
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["optimizer=adamw", "schedule=warmup_cosine", "train.batch_size=null", "train.steps=50"],
        ["data=collinear", "optimizer=lbfgs", "train.dtype=float64", "train.folds=3"],
        [
            "data=csv",
            "data.path=x.csv",
            "data.target=y",
            "data.features=[a,b]",
            "optimizer=rmsprop",
        ],
        ["schedule=exponential", "optimizer=nesterov", "tracking.run_name=named"],
    ],
)
def test_from_container_rebuilds_the_typed_config_from_its_logged_yaml(overrides):
    cfg = typed_config(*overrides)
    as_logged = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    assert config.from_container(as_logged) == cfg


@pytest.mark.parametrize(
    ("dotted", "value", "key"),
    [
        ("_target_", "os.makedirs", "_target_"),
        ("optimizer._target_", "os.makedirs", "optimizer._target_"),
        ("data._target_", "os.makedirs", "data._target_"),
        ("train._target_", "os.makedirs", "train._target_"),
        ("optimizer.betas", 0.9, "optimizer.betas"),
        ("optimizer.name", "no_such_optimizer", "optimizer.name"),
        ("train.epochs", "many", "train.epochs"),
        ("train.batch_size", [10], "train.batch_size"),
        ("tracking.run_name", "${oc.env:HOME}", "tracking.run_name"),
        ("data.weights", [1.0, "${oc.env:HOME}"], "data.weights[1]"),
        ("train.seed", "???", "train.seed"),
        ("schedule", "constant", "schedule"),
    ],
)
def test_from_container_refuses_what_the_command_line_refuses(dotted, value, key):
    cfg = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.structured(typed_config())))
    with pytest.raises(ConfigError) as info:
        config.from_container(edited(cfg, dotted, value))
    assert info.value.key == key


# --- reproduce -----------------------------------------------------------------------------------
def test_reproducing_a_finished_run_matches_theta_and_logs_a_tagged_run(logged, capsys):
    before = run_ids(logged)
    assert reproduce.main([logged.run_id, "--uri", logged.uri]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "θ matches"
    assert "max |θ now − θ logged| = 0" in out  # bit-identical on the same code
    (new,) = run_ids(logged) - before
    run = MlflowClient(logged.uri).get_run(new)
    assert run.info.status == "FINISHED"
    assert run.data.tags["lrexp.reproduction_of"] == logged.run_id
    assert run.info.run_name == f"reproduce {logged.run_id}"
    assert run.data.tags["lrexp.config_hash"] == logged.tags["lrexp.config_hash"]


def test_reproduce_as_a_subprocess_with_no_track_logs_no_run(logged):
    before = run_ids(logged)
    proc = subprocess.run(
        [sys.executable, "-m", "lrexp.reproduce", logged.run_id, "--uri", logged.uri, "--no-track"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "θ matches"
    assert run_ids(logged) == before


def test_a_different_theta_is_reported_with_exit_status_1(logged, capsys):
    theta = [v + 1e-3 for v in logged.theta]
    run_id = logged_copy(logged, logged.config, theta=theta)
    assert reproduce.main([run_id, "--uri", logged.uri, "--no-track"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "θ differs"
    assert "max |θ now − θ logged| = 0.001" in out


def test_another_or_unknown_commit_is_warned_about(logged, capsys):
    other = logged_copy(logged, logged.config, tags={"lrexp.git_commit": "0" * 40})
    assert reproduce.main([other, "--uri", logged.uri, "--no-track"]) == 0
    warnings = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert any("0" * 40 in w for w in warnings)
    unknown = logged_copy(logged, logged.config, without=("lrexp.git_commit",))
    assert reproduce.main([unknown, "--uri", logged.uri, "--no-track"]) == 0
    warnings = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert any("commit is unknown" in w for w in warnings)


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("optimizer.lr", -1.0, "optimizer.lr=-1.0: must be a finite number > 0"),
        ("train.epochs", 0, "train.epochs=0: must be an integer >= 1"),
        ("optimizer.betas", 0.9, "optimizer.betas=0.9: unknown key"),
        ("train.dtype", "float16", "train.dtype='float16'"),
    ],
)
def test_a_tampered_logged_config_is_refused_before_any_run(logged, capsys, dotted, value, named):
    run_id = logged_copy(logged, edited(logged.config, dotted, value))
    before = run_ids(logged)
    assert reproduce.main([run_id, "--uri", logged.uri]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("lrexp: error: ") and named in line
    assert run_ids(logged) == before


@pytest.mark.parametrize("where", ["optimizer", "data", None])
def test_a_target_in_the_logged_config_is_refused_and_never_instantiated(
    logged, capsys, tmp_path, where
):
    made = tmp_path / "made_by_target"
    target = {"_target_": "os.makedirs", "name": str(made)}
    if where is None:
        cfg = {**logged.config, **target}
    else:
        cfg = edited(logged.config, where, {**logged.config[where], **target})
    run_id = logged_copy(logged, cfg)
    before = run_ids(logged)
    assert reproduce.main([run_id, "--uri", logged.uri]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lrexp: error: ") and "_target_" in line
    assert not made.exists()
    assert run_ids(logged) == before


def test_an_unknown_run_id_is_refused(logged, capsys):
    assert reproduce.main(["f" * 32, "--uri", logged.uri]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"lrexp: error: {'f' * 32}: no such run in {logged.uri}"


# --- a diverged original ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverged(logged) -> tuple[str, dict, int]:
    """A run that diverged (FAILED, ``diverged_step`` logged): its id, logged config and step."""
    name = MlflowClient(logged.uri).get_experiment(logged.experiment_id).name
    overrides = [f"tracking.uri={logged.uri}", f"tracking.experiment={name}", *SMALL]
    overrides += ["optimizer=sgd", "optimizer.lr=0.5", "train.reduction=sum"]
    with pytest.raises(pipeline.Diverged):
        pipeline.run(typed_config(*overrides), base_dir=logged.base_dir, overrides=overrides)
    client = MlflowClient(logged.uri)
    (run,) = client.search_runs([logged.experiment_id], "attributes.status = 'FAILED'")
    local = client.download_artifacts(run.info.run_id, "config/config.yaml", str(logged.base_dir))
    cfg = yaml.safe_load(Path(local).read_text())
    return run.info.run_id, cfg, int(run.data.metrics["diverged_step"])


def test_a_diverged_run_reproduces_as_diverged_at_the_same_step_as_a_subprocess(logged, diverged):
    run_id, _, step = diverged
    proc = subprocess.run(
        [sys.executable, "-m", "lrexp.reproduce", run_id, "--uri", logged.uri, "--no-track"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"diverged at the same step ({step}): matches"


def test_a_divergence_at_another_step_differs_with_exit_status_1(logged, diverged, capsys):
    _, cfg, step = diverged
    copy_id = logged_copy(logged, cfg)
    MlflowClient(logged.uri).log_metric(copy_id, "diverged_step", step + 7)
    assert reproduce.main([copy_id, "--uri", logged.uri, "--no-track"]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    then = f"the original diverged at step {step + 7}"
    assert last == f"differs: the reproduction diverged at step {step}; {then}"


def test_a_reproduction_that_diverges_where_the_original_did_not_differs(logged, diverged, capsys):
    _, cfg, step = diverged
    assert reproduce.main([logged_copy(logged, cfg), "--uri", logged.uri, "--no-track"]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        last == f"differs: the reproduction diverged at step {step}; the original did not diverge"
    )
