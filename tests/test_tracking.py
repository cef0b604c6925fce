"""What a tracked run leaves in a real MLflow store, read back through MLflow's own client.

Every run here goes to the session's SQLite store, each under its own experiment whose artifact
location is a temp dir (so nothing is written under the working directory). Runs are shared by
module-scoped fixtures; each test checks one property of what was stored against an independent
oracle: the composed config, the outcome's history, numpy arithmetic, library versions.
"""

from __future__ import annotations

import ast
import json
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path

import hydra
import jax
import mlflow
import numpy as np
import optax
import pandas as pd
import pytest
import yaml
from conftest import compose_config, runs_in, typed_config
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import lrexp
from lrexp import pipeline
from lrexp.core.data import DataError

CURVES = ["train_mse", "test_mse", "train_tsse", "lr", "grad_norm"]
# Their MLflow keys: sectioned so the run page leads with the loss (see tracking.metric_names).
KEY = {
    "train_mse": "loss/train_mse",
    "test_mse": "loss/test_mse",
    "train_tsse": "loss/train_tsse",
    "lr": "optimizer/lr",
    "grad_norm": "optimizer/grad_norm",
}
CURVES_ORDER = ["train_tsse", "train_mse", "test_mse", "lr", "grad_norm"]  # history.csv's columns


@dataclass(frozen=True)
class Tracked:
    """One finished tracked run: what pipeline.run returned and what the store holds."""

    outcome: pipeline.Outcome
    overrides: list[str]
    experiment: str
    experiment_id: str
    run: Run
    base_dir: Path


def _new_experiment(store_uri: str, artifacts: Path) -> tuple[str, str]:
    """Create a fresh experiment whose artifacts live in ``artifacts``; return (name, id)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    exp_id = MlflowClient(store_uri).create_experiment(name, artifact_location=str(artifacts))
    return name, exp_id


def _tracked_run(store_uri: str, base_dir: Path, *overrides: str) -> Tracked:
    """Run lrexp in-process with tracking overrides placed first (they must not name the run)."""
    name, exp_id = _new_experiment(store_uri, base_dir / "artifacts")
    all_overrides = [f"tracking.uri={store_uri}", f"tracking.experiment={name}", *overrides]
    outcome = pipeline.run(typed_config(*all_overrides), base_dir=base_dir, overrides=all_overrides)
    run = MlflowClient(store_uri).get_run(outcome.run_id)
    return Tracked(outcome, all_overrides, name, exp_id, run, base_dir)


def _history(client: MlflowClient, run_id: str, key: str) -> tuple[list[int], np.ndarray]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in points], np.array([m.value for m in points], dtype=np.float64)


def _download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _logged_models(store_uri: str, experiment_id: str, run_id: str) -> list:
    mlflow.set_tracking_uri(store_uri)
    models = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    return [m for m in models if m.source_run_id == run_id]


def _git_dir() -> Path | None:
    """The .git directory above lrexp's source, if the source is a git checkout."""
    for parent in Path(lrexp.__file__).resolve().parents:
        if (parent / ".git").exists():
            return parent / ".git"
    return None


# --- shared runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(store_uri) -> MlflowClient:
    return MlflowClient(store_uri)


@pytest.fixture(scope="module")
def adam_run(store_uri, tmp_path_factory) -> Tracked:
    """A single-split mini-batch Adam run on the synthetic linear data, model logged."""
    # every epoch logged: 100 epochs are 101 points, one past max_curve_points' default
    return _tracked_run(
        store_uri,
        tmp_path_factory.mktemp("adam"),
        "optimizer=adam",
        "tracking.max_curve_points=200",
    )


@pytest.fixture(scope="module")
def default_run(store_uri, tmp_path_factory) -> Tracked:
    """The default config (momentum on linear data) with only tracking.* overrides."""
    return _tracked_run(
        store_uri,
        tmp_path_factory.mktemp("default"),
        "tracking.log_model=false",
        "tracking.max_curve_points=200",  # every epoch: 100 epochs are 101 points
    )


@pytest.fixture(scope="module")
def cv_run(store_uri, tmp_path_factory) -> Tracked:
    """The tutorial's 6 folds as independent cross-validation, shortened to 3 epochs, with a
    chosen run name."""
    return _tracked_run(
        store_uri,
        tmp_path_factory.mktemp("cv"),
        "experiment=tutorial",
        "train.cv=independent",
        "train.epochs=3",
        "train.tol=null",
        "tracking.run_name=xyz",
        "tracking.log_model=false",
    )


WIDE_FEATURES = [f"feature_with_a_rather_long_name_{j:03d}" for j in range(200)]
CONSTANT_FEATURE = WIDE_FEATURES[7]


def _write_wide_csv(path, constant: str | None = None) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(260, len(WIDE_FEATURES)))
    if constant is not None:
        X[:, WIDE_FEATURES.index(constant)] = 1.5
    y = X.sum(axis=1) + rng.normal(size=260)
    lines = [",".join([*WIDE_FEATURES, "target"])]
    lines += [",".join(repr(float(v)) for v in [*row, t]) for row, t in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _wide_overrides(store_uri: str, name: str, path) -> list[str]:
    return [
        f"tracking.uri={store_uri}",
        f"tracking.experiment={name}",
        "data=csv",
        f"data.path={path}",
        "data.target=target",
        f"data.features=[{','.join(WIDE_FEATURES)}]",
        "optimizer=lbfgs",
        "train.epochs=3",
        "tracking.log_model=false",
    ]


@pytest.fixture(scope="module")
def wide_run(store_uri, tmp_path_factory) -> tuple[Run, list[str]]:
    """A run over a wide CSV whose feature list is longer than a param value may be."""
    base = tmp_path_factory.mktemp("wide")
    path = base / "wide.csv"
    _write_wide_csv(path)
    name, _ = _new_experiment(store_uri, base / "artifacts")
    overrides = _wide_overrides(store_uri, name, path)
    pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
    (run,) = runs_in(store_uri, name)
    return run, overrides


def test_constant_feature_is_bad_input_that_creates_no_run(store_uri, tmp_path):
    path = tmp_path / "wide.csv"
    _write_wide_csv(path, constant=CONSTANT_FEATURE)
    name, _ = _new_experiment(store_uri, tmp_path / "artifacts")
    overrides = _wide_overrides(store_uri, name, path)
    with pytest.raises(DataError, match=CONSTANT_FEATURE):
        pipeline.run(typed_config(*overrides), base_dir=tmp_path, overrides=overrides)
    assert runs_in(store_uri, name) == []


# --- run status and name -------------------------------------------------------------------------
def test_run_is_finished_with_an_end_time(adam_run):
    assert adam_run.run.info.status == "FINISHED"
    assert adam_run.run.info.end_time is not None
    assert adam_run.run.info.end_time >= adam_run.run.info.start_time


def test_run_is_stored_under_the_configured_experiment(adam_run, store_uri):
    assert adam_run.run.info.experiment_id == adam_run.experiment_id
    assert [r.info.run_id for r in runs_in(store_uri, adam_run.experiment)] == [
        adam_run.outcome.run_id
    ]


def test_run_name_is_the_non_tracking_overrides(adam_run):
    assert adam_run.run.info.run_name == "optimizer=adam"


def test_run_name_without_overrides_is_optimizer_dash_data(default_run):
    assert default_run.run.info.run_name == "momentum-linear"


def test_configured_run_name_wins_over_overrides(cv_run):
    assert cv_run.run.info.run_name == "xyz"


# --- params ------------------------------------------------------------------------------------
def test_params_hold_the_resolved_config_under_dotted_keys(adam_run):
    params = adam_run.run.data.params
    composed = _flatten(OmegaConf.to_container(compose_config(*adam_run.overrides), resolve=True))
    assert composed, "the composed config is empty"
    for key, value in composed.items():
        assert key in params, key
        if isinstance(value, list):
            assert ast.literal_eval(params[key]) == value, key
        elif value is not None:
            assert params[key] == str(value), key
    assert params["optimizer.name"] == "adam"
    assert params["optimizer.lr"] == "0.01"  # adam's default
    assert params["train.batch_size"] == str(composed["train.batch_size"])
    assert params["data.n"] == str(composed["data.n"])


def test_run_params_describe_the_split_and_loop(adam_run):
    params, ds = adam_run.run.data.params, adam_run.outcome.dataset
    n, m = ds.X.shape
    fold = adam_run.outcome.folds[0]
    assert int(params["run.n_rows"]) == n
    assert int(params["run.n_features"]) == m
    assert int(params["run.n_train"]) == fold.n_train
    assert int(params["run.n_test"]) == fold.n_test
    assert fold.n_train + fold.n_test == n
    batch = int(params["train.batch_size"])
    assert int(params["run.batch_size"]) == batch
    assert int(params["run.steps_per_epoch"]) == -(-fold.n_train // batch)
    assert int(params["run.epochs"]) == int(params["train.epochs"])


def test_cv_run_params_give_one_folds_split_sizes(cv_run):
    params = cv_run.run.data.params
    n = cv_run.outcome.dataset.X.shape[0]
    assert int(params["run.n_test"]) == n // 6
    assert int(params["run.n_train"]) == n - n // 6


def test_param_keys_and_values_are_within_mlflow_limits(adam_run):
    params = adam_run.run.data.params
    assert all(len(k) <= 250 for k in params)
    assert all(len(v) <= 6000 for v in params.values())


def test_param_longer_than_the_limit_is_cut_to_6000_chars(wide_run):
    run, _ = wide_run
    value = run.data.params["data.features"]
    assert len(value) == 6000
    assert WIDE_FEATURES[0] in value
    assert WIDE_FEATURES[-1] not in value  # the tail of the long list was cut
    assert all(len(v) <= 6000 for v in run.data.params.values())


# --- artifacts ---------------------------------------------------------------------------------
def test_config_artifact_equals_the_composed_config(adam_run, client, tmp_path):
    path = _download(client, adam_run.outcome.run_id, "config/config.yaml", tmp_path)
    logged = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    composed = OmegaConf.to_container(compose_config(*adam_run.overrides), resolve=True)
    assert logged == composed


def test_overrides_artifact_equals_the_overrides_list(adam_run, client, tmp_path):
    path = _download(client, adam_run.outcome.run_id, "config/overrides.yaml", tmp_path)
    assert yaml.safe_load(path.read_text()) == adam_run.overrides


def test_theta_json_holds_the_outcomes_thetas(adam_run, client, tmp_path):
    out = adam_run.outcome
    doc = json.loads(_download(client, out.run_id, "theta.json", tmp_path).read_text())
    assert set(doc) == {
        "names",
        "theta",
        "theta_star",
        "theta_true",
        "folds",
        "features",
        "categories",
        "columns",
        "example",
    }
    assert doc["features"] == list(out.dataset.feature_names)
    np.testing.assert_array_equal(doc["example"], out.dataset.X[:5])
    assert doc["names"] == out.names == ["bias", *(f"theta_{j}" for j in range(1, 6))]
    np.testing.assert_allclose(doc["theta"], out.theta, rtol=1e-12)
    np.testing.assert_allclose(doc["theta_star"], out.theta_star, rtol=1e-12)
    cfg = compose_config(*adam_run.overrides)
    np.testing.assert_allclose(doc["theta_true"], [cfg.data.bias, *cfg.data.weights])
    assert len(doc["folds"]) == 1
    np.testing.assert_allclose(doc["folds"][0]["theta"], out.folds[0].theta, rtol=1e-12)
    np.testing.assert_allclose(doc["folds"][0]["theta_star"], out.folds[0].theta_star, rtol=1e-12)


def test_cv_theta_json_theta_is_the_mean_of_the_fold_thetas(cv_run, client, tmp_path):
    doc = json.loads(_download(client, cv_run.outcome.run_id, "theta.json", tmp_path).read_text())
    assert len(doc["folds"]) == 6
    fold_thetas = np.array([f["theta"] for f in doc["folds"]])
    np.testing.assert_allclose(doc["theta"], fold_thetas.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize(
    "artifact", ["plots/loss_curve.svg", "plots/fitted_vs_actual.svg", "plots/landscape.svg"]
)
def test_plots_are_well_formed_svg_images(adam_run, client, tmp_path, artifact):
    import xml.etree.ElementTree as ET

    from mlflow.utils.mime_type_utils import _guess_mime_type

    root = ET.parse(_download(client, adam_run.outcome.run_id, artifact, tmp_path)).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0
    drawn = [e for e in root.iter() if e.tag.endswith(("polyline", "circle"))]
    assert len(drawn) >= 2  # curves or points, not an empty frame
    assert _guess_mime_type(artifact) == "image/svg+xml"  # the UI's artifact view shows an image


def test_loss_curve_svg_draws_train_and_test_and_the_optimum(adam_run, client, tmp_path):
    text = _download(client, adam_run.outcome.run_id, "plots/loss_curve.svg", tmp_path).read_text()
    assert "train MSE" in text and "test MSE" in text and "least-squares optimum" in text
    assert text.count("<polyline") == 2


def test_history_csv_has_every_curve_at_every_epoch(adam_run, client, tmp_path):
    out = adam_run.outcome
    table = pd.read_csv(_download(client, out.run_id, "history.csv", tmp_path))
    fold = out.folds[0]
    assert list(table.columns) == ["epoch", *CURVES_ORDER, *out.names]
    assert table["epoch"].tolist() == list(range(fold.fit.epochs_run + 1))
    for key in CURVES:
        np.testing.assert_allclose(table[key], getattr(fold.fit.history, key), rtol=1e-6)
    for j, name in enumerate(out.names):
        np.testing.assert_allclose(table[name], fold.trajectory[:, j], rtol=1e-6)


# --- metrics -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", CURVES)
def test_curve_metric_has_one_point_per_epoch_equal_to_the_history(adam_run, client, key):
    fold = adam_run.outcome.folds[0]
    steps, values = _history(client, adam_run.outcome.run_id, KEY[key])
    assert steps == list(range(fold.fit.epochs_run + 1))
    np.testing.assert_allclose(values, getattr(fold.fit.history, key), rtol=1e-6)


def test_theta_metrics_trace_the_trajectory_and_end_at_theta(adam_run, client):
    out = adam_run.outcome
    fold = out.folds[0]
    for j, name in enumerate(out.names):
        steps, values = _history(client, out.run_id, f"model/{name}")
        assert steps == list(range(fold.fit.epochs_run + 1)), name
        np.testing.assert_allclose(values, fold.trajectory[:, j], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(values[-1], out.theta[j], rtol=1e-6, err_msg=name)


def test_summary_metrics_equal_the_outcome_summary(adam_run):
    metrics, summary = adam_run.run.data.metrics, adam_run.outcome.summary
    expected = [
        "final_train_mse",
        "final_test_mse",
        "final_train_r2",
        "final_test_r2",
        "min_train_mse",
        "min_test_mse",
        "best_epoch",
        "gap_tsse",
        "gap_theta",
        "optimal_train_mse",
        "condition_number",
        "true_theta_error",
    ]
    assert set(expected) <= set(summary)
    for key, value in summary.items():
        if value is not None:
            assert metrics[key] == pytest.approx(value, rel=1e-9), key


def test_summary_values_that_are_none_are_not_logged(adam_run):
    missing = [k for k, v in adam_run.outcome.summary.items() if v is None]
    assert "epochs_to_tol" in missing  # train.tol is null: the tolerance is never met
    assert not set(missing) & set(adam_run.run.data.metrics)


def test_min_mse_and_best_epoch_agree_with_the_logged_curves(adam_run, client):
    metrics, run_id = adam_run.run.data.metrics, adam_run.outcome.run_id
    _, train_mse = _history(client, run_id, "loss/train_mse")
    _, test_mse = _history(client, run_id, "loss/test_mse")
    assert metrics["min_train_mse"] == pytest.approx(train_mse.min(), rel=1e-6)
    assert metrics["min_test_mse"] == pytest.approx(test_mse.min(), rel=1e-6)
    assert metrics["best_epoch"] == int(np.argmin(test_mse))


def test_theta_gaps_agree_with_the_logged_thetas(adam_run, client, tmp_path):
    metrics = adam_run.run.data.metrics
    doc = json.loads(_download(client, adam_run.outcome.run_id, "theta.json", tmp_path).read_text())
    theta = np.array(doc["theta"])
    assert metrics["gap_theta"] == pytest.approx(np.linalg.norm(theta - doc["theta_star"]))
    assert metrics["true_theta_error"] == pytest.approx(
        np.linalg.norm(theta - np.array(doc["theta_true"]))
    )


def test_cv_run_logs_per_fold_summaries_for_every_fold(cv_run):
    metrics, summary = cv_run.run.data.metrics, cv_run.outcome.summary
    for k in range(1, 7):
        key = f"per_fold/fold_{k}/final_test_mse"
        assert metrics[key] == pytest.approx(summary[f"fold_{k}/final_test_mse"], rel=1e-9)
        assert metrics[key] == pytest.approx(cv_run.outcome.folds[k - 1].test["mse"], rel=1e-9)
    assert not any(k.startswith(("per_fold/fold_7/", "fold_")) for k in metrics)


def test_cv_mean_and_std_are_over_the_per_fold_test_mses(cv_run):
    metrics = cv_run.run.data.metrics
    per_fold = np.array([metrics[f"per_fold/fold_{k}/final_test_mse"] for k in range(1, 7)])
    assert metrics["cv_test_mse_mean"] == pytest.approx(per_fold.mean(), rel=1e-9)
    assert metrics["cv_test_mse_std"] == pytest.approx(per_fold.std(ddof=1), rel=1e-9)


def test_cv_run_logs_each_folds_curves(cv_run, client):
    out = cv_run.outcome
    for k, fold in enumerate(out.folds, start=1):
        for key in CURVES:
            steps, values = _history(client, out.run_id, f"per_fold/fold_{k}/{KEY[key]}")
            assert steps == list(range(fold.fit.epochs_run + 1)), (k, key)
            np.testing.assert_allclose(
                values, getattr(fold.fit.history, key), rtol=1e-6, err_msg=f"fold_{k}/{key}"
            )
        for j, name in enumerate(out.names):
            _, values = _history(client, out.run_id, f"per_fold/fold_{k}/model/{name}")
            np.testing.assert_allclose(values, fold.trajectory[:, j], rtol=1e-6)


def test_cv_unprefixed_curve_is_the_mean_of_the_fold_curves(cv_run, client):
    out = cv_run.outcome
    assert len({f.fit.epochs_run for f in out.folds}) == 1  # tol is off: all folds run 3 epochs
    _, values = _history(client, out.run_id, "loss/train_mse")
    folds = np.array([f.fit.history.train_mse for f in out.folds], dtype=np.float64)
    np.testing.assert_allclose(values, folds.mean(axis=0), rtol=1e-6)


# --- dataset input and tags --------------------------------------------------------------------
def test_run_records_the_dataset_input_with_name_digest_and_size(adam_run):
    inputs = adam_run.run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds, dataset = adam_run.outcome.dataset, inputs[0].dataset
    assert dataset.name == "linear"
    assert dataset.digest
    profile = json.loads(dataset.profile)
    n, m = ds.X.shape
    assert profile["num_rows"] == n
    assert profile["num_elements"] == n * (m + 1)  # the features and the target
    schema = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
    assert schema == [*ds.feature_names, ds.target_name]


def test_run_has_provenance_tags(adam_run):
    tags = adam_run.run.data.tags
    assert tags["lrexp.jax"] == jax.__version__
    assert tags["lrexp.optax"] == optax.__version__
    assert tags["lrexp.mlflow"] == mlflow.__version__
    assert tags["lrexp.hydra_core"] == hydra.__version__
    assert tags["lrexp.python"] == platform.python_version()
    assert tags["lrexp.jax_backend"] == jax.default_backend()
    assert tags["lrexp.jax_devices"] == str(jax.device_count())
    assert tags["lrexp.dtype"] == adam_run.run.data.params["train.dtype"]
    assert tags["lrexp.command"].startswith("python")


def test_git_tags_are_present_exactly_when_the_source_is_a_git_checkout(adam_run):
    tags = adam_run.run.data.tags
    if _git_dir() is None:
        assert "lrexp.git_commit" not in tags
        assert "lrexp.git_dirty" not in tags
        return
    commit = tags["lrexp.git_commit"]
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    assert tags["lrexp.git_dirty"] in ("true", "false")


# --- the logged model --------------------------------------------------------------------------
def test_logged_model_predicts_bias_plus_x_dot_weights(adam_run, store_uri):
    out = adam_run.outcome
    models = _logged_models(store_uri, adam_run.experiment_id, out.run_id)
    assert len(models) == 1
    model = mlflow.pyfunc.load_model(models[0].model_uri)
    rng = np.random.default_rng(7)
    X = rng.normal(scale=3.0, size=(25, len(out.dataset.feature_names)))
    frame = pd.DataFrame(X, columns=list(out.dataset.feature_names))
    expected = out.theta[0] + X @ out.theta[1:]
    np.testing.assert_allclose(np.asarray(model.predict(frame)).ravel(), expected, rtol=1e-9)
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_allclose(np.asarray(model.predict(shuffled)).ravel(), expected, rtol=1e-9)


def test_logged_model_signature_names_the_feature_columns(adam_run, store_uri):
    out = adam_run.outcome
    (info,) = _logged_models(store_uri, adam_run.experiment_id, out.run_id)
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.get_input_schema().input_names() == list(out.dataset.feature_names)


def test_logged_model_carries_the_runs_summary_and_its_last_epochs_values(adam_run, store_uri):
    out = adam_run.outcome
    (info,) = _logged_models(store_uri, adam_run.experiment_id, out.run_id)
    linked = {m.key: m for m in info.metrics}
    assert linked["final_test_mse"].value == pytest.approx(out.summary["final_test_mse"], rel=1e-9)
    client = MlflowClient(store_uri)
    keys = {KEY[c] for c in CURVES}
    assert keys & set(linked)
    for key in keys & set(linked):  # the curves at the model's epoch (the last), not at 0
        last = max(client.get_metric_history(out.run_id, key), key=lambda m: m.step)
        assert (linked[key].step, linked[key].value) == (last.step, last.value)
        assert last.step > 0


def test_log_model_false_logs_no_model(default_run, store_uri):
    assert default_run.run.info.status == "FINISHED"
    assert _logged_models(store_uri, default_run.experiment_id, default_run.outcome.run_id) == []


# --- CSV data ----------------------------------------------------------------------------------
def test_csv_run_records_the_file_and_a_model_over_only_the_chosen_features(
    store_uri, tmp_path, small_csv
):
    t = _tracked_run(
        store_uri,
        tmp_path,
        "data=csv",
        f"data.path={small_csv.resolve()}",
        "data.target=price",
        "data.features=[a,b]",
        "optimizer=lbfgs",
    )
    out = t.outcome
    assert t.run.info.status == "FINISHED"
    assert out.names == ["bias", "theta_1", "theta_2"]
    np.testing.assert_allclose(out.theta, [1.0, 2.0, -3.0], atol=0.05)

    (dataset_input,) = t.run.inputs.dataset_inputs
    assert dataset_input.dataset.name == small_csv.stem
    assert str(small_csv.resolve()) in dataset_input.dataset.source

    (info,) = _logged_models(store_uri, t.experiment_id, out.run_id)
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.get_input_schema().input_names() == ["a", "b"]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(15, 2))
    predicted = np.asarray(model.predict(pd.DataFrame(X, columns=["a", "b"]))).ravel()
    np.testing.assert_allclose(predicted, out.theta[0] + X @ out.theta[1:], rtol=1e-9)


# --- tracking off and failures -----------------------------------------------------------------
def test_tracking_disabled_creates_no_run(store_uri, experiment, tracked, tmp_path):
    overrides = [*tracked, "tracking.enabled=false", "train.epochs=2"]
    outcome = pipeline.run(typed_config(*overrides), base_dir=tmp_path, overrides=overrides)
    assert outcome.run_id is None
    assert outcome.folds[0].fit.epochs_run == 2  # it still trained
    assert runs_in(store_uri, experiment) == []
    assert MlflowClient(store_uri).get_experiment_by_name(experiment) is None
    assert list(tmp_path.iterdir()) == []


def test_a_long_curve_is_sampled_with_its_first_best_and_last_epochs(store_uri, experiment):
    cfg = typed_config(
        "optimizer=sgd",
        "optimizer.lr=0.0005",
        "train.batch_size=null",
        "train.steps=2500",
        "tracking.log_model=false",
        "tracking.max_curve_points=50",
        f"tracking.uri={store_uri}",
        f"tracking.experiment={experiment}",
    )
    outcome = pipeline.run(cfg)
    client = MlflowClient(store_uri)
    history = outcome.folds[0].fit.history
    for key in ("loss/train_mse", "loss/test_mse", "model/bias"):
        logged = sorted(client.get_metric_history(outcome.run_id, key), key=lambda m: m.step)
        steps = [m.step for m in logged]
        assert len(steps) <= 50 and steps == sorted(set(steps))
        assert steps[0] == 0 and steps[-1] == 2500
        assert (
            int(np.argmin(history.test_mse)) in steps and int(np.argmin(history.train_mse)) in steps
        )
        if key != "model/bias":
            curve = getattr(history, key.removeprefix("loss/"))
            for m in logged:  # each sampled point is the value of the epoch it is logged at
                assert m.value == pytest.approx(float(curve[m.step]), rel=1e-6)
    table = pd.read_csv(client.download_artifacts(outcome.run_id, "history.csv"))
    assert len(table) == 2501  # the full resolution is in the artifact


def test_initializing_a_store_gives_sqlite_the_statistics_to_read_a_curve_by_its_run(tmp_path):
    """Without statistics SQLite reads a run's metric history through the index on the key
    alone, scanning that metric of every run in the store; init_store (a sweep's start) fixes
    the plan MLflow's history query gets."""
    import sqlite3

    from lrexp.tracking import lifecycle, reader, writer

    path = tmp_path / "m.db"
    uri = f"sqlite:///{path}"
    lifecycle.init_store(uri)
    exp = lifecycle.experiment_id(uri, "stats")
    runs = [lifecycle.create_run(uri, exp, f"r{i}", {}) for i in range(20)]
    for i, run_id in enumerate(runs):
        curve = np.linspace(1.0, 0.0, 40) + i
        writer.log_batch(
            run_id, curves={"test_mse": curve, "train_mse": curve / 2}, client=MlflowClient(uri)
        )
    lifecycle.init_store(uri)
    query = "SELECT * FROM metrics WHERE metrics.run_uuid = ? AND metrics.key = ?"
    with sqlite3.connect(path) as db:
        plan = " ".join(
            str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + query, (runs[3], "test_mse"))
        )
    assert "run_uuid=?" in plan, plan
    steps, values = reader.metric_curve(uri, runs[3], "test_mse")
    np.testing.assert_allclose(values, np.linspace(1.0, 0.0, 40) + 3)
    assert list(steps) == list(range(40))
