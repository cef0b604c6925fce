"""Configuration: real Hydra composition of every option, schema checks, value checks."""

from __future__ import annotations

import math
from pathlib import Path

import hydra.errors
import numpy as np
import pytest
from conftest import compose_config, runs_in, typed_config
from omegaconf import OmegaConf

from lrexp import config, pipeline
from lrexp.core import optim

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUP_OPTIONS = [
    (group, option)
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
    for option in options(group)
]


def test_conf_offers_the_expected_options():
    assert options("data") == ["collinear", "csv", "file", "linear"]
    assert set(options("optimizer")) == set(optim.OPTIMIZERS)
    assert set(options("schedule")) == set(optim.SCHEDULES)
    assert options("experiment") == ["tutorial"]


@pytest.mark.parametrize("group", ["data", "optimizer", "schedule", "train", "tracking"])
def test_every_yaml_option_has_a_schema(group):
    assert set(options(group)) == set(config.SCHEMAS[group])


def test_schema_and_registry_agree():
    assert set(config.SCHEMAS["optimizer"]) == set(optim.OPTIMIZERS)
    assert set(config.SCHEMAS["schedule"]) == set(optim.SCHEDULES)


# --- every option composes and builds ------------------------------------------------------------
@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_validates_and_trains(group, option, small_csv):
    overrides = [f"{group}={option}", "tracking.enabled=false", "train.epochs=2"]
    if option in ("csv", "file"):
        overrides += [f"data.path={small_csv.name}", "data.target=price"]
    cfg = typed_config(*overrides)
    if group in config.SCHEMAS:
        assert type(getattr(cfg, group)) is config.SCHEMAS[group][option]
    if group in ("data", "optimizer", "schedule"):
        assert getattr(cfg, group).name == option
    config.validate(cfg, small_csv.parent)

    outcome = pipeline.run(cfg, base_dir=small_csv.parent, overrides=overrides)
    n_features = 3 if option in ("csv", "file") else 5  # a, b, unused; generators: 5 weights
    assert outcome.theta.shape == (n_features + 1,)
    assert np.all(np.isfinite(outcome.theta)) and np.all(np.isfinite(outcome.theta_star))
    values = {k: v for k, v in outcome.summary.items() if v is not None}
    assert values and all(math.isfinite(v) for v in values.values()), values
    assert all(f.fit.epochs_run <= 2 for f in outcome.folds)


# --- composition-time failures: Hydra names the key ---------------------------------------------
@pytest.mark.parametrize(
    "overrides, named",
    [
        (["train.epoch=3"], "train.epoch"),  # unknown key
        (["optimizer=sgd", "optimizer.b1=0.9"], "optimizer.b1"),  # another optimizer's knob
        (["train.epochs=abc"], "train.epochs=abc"),  # wrong type
        (["optimizer.lr=fast"], "optimizer.lr=fast"),
        (["schedule=exponential", "schedule.staircase=maybe"], "schedule.staircase=maybe"),
        (["optimizer=nadam"], "optimizer/nadam"),  # unknown option
        (["data=parquet"], "data/parquet"),
    ],
)
def test_bad_keys_types_and_options_fail_at_composition(overrides, named):
    with pytest.raises(hydra.errors.ConfigCompositionException) as exc:
        compose_config(*overrides)
    assert named in str(exc.value)


def test_wrong_type_error_says_what_type_was_expected():
    with pytest.raises(hydra.errors.ConfigCompositionException) as exc:
        compose_config("train.epochs=abc")
    assert "integer" in str(exc.value.__cause__).lower()


# --- value checks after composition --------------------------------------------------------------
BAD_VALUES = [
    (["optimizer.lr=0"], "optimizer.lr", 0.0),
    (["optimizer.lr=-1"], "optimizer.lr", -1.0),
    (["optimizer.lr=nan"], "optimizer.lr", math.nan),
    (["optimizer.lr=inf"], "optimizer.lr", math.inf),
    (["optimizer.momentum=1.0"], "optimizer.momentum", 1.0),
    (["optimizer=adam", "optimizer.b2=1.5"], "optimizer.b2", 1.5),
    (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps", 0.0),
    (["optimizer=adamw", "optimizer.weight_decay=-0.1"], "optimizer.weight_decay", -0.1),
    (["optimizer=rmsprop", "optimizer.decay=1.0"], "optimizer.decay", 1.0),
    (["optimizer=lbfgs", "optimizer.memory_size=0"], "optimizer.memory_size", 0),
    (["schedule=exponential", "schedule.transition_steps=0"], "schedule.transition_steps", 0),
    (["schedule=cosine", "schedule.alpha=1.5"], "schedule.alpha", 1.5),
    (["schedule=warmup_cosine", "schedule.warmup_steps=-1"], "schedule.warmup_steps", -1),
    (["train.epochs=0"], "train.epochs", 0),
    (["train.batch_size=0"], "train.batch_size", 0),
    (["train.test_fraction=0"], "train.test_fraction", 0.0),
    (["train.test_fraction=1"], "train.test_fraction", 1.0),
    (["train.folds=1"], "train.folds", 1),
    (["train.dtype=float16"], "train.dtype", "float16"),
    (["train.tol=-0.1"], "train.tol", -0.1),
    (["train.steps=5", "train.batch_size=10"], "train.steps", 5),
    (["train.seed=-1"], "train.seed", -1),
    (["data.n=6"], "data.n", 6),  # 5 weights + bias need at least 7 rows
    (["data=collinear", "data.collinearity=1.0"], "data.collinearity", 1.0),
    (["data.noise=-1"], "data.noise", -1.0),
    (["data.weights=[]"], "data.weights", []),
    (["data=csv", "data.path=missing.csv", "data.target=price"], "data.path", "missing.csv"),
    (
        ["data=csv", "data.path={csv}", "data.target=price", "data.features=[a,price]"],
        "data.features",
        ["a", "price"],
    ),
    (
        ["data=csv", "data.path={csv}", "data.target=price", "data.features=[a,a]"],
        "data.features",
        ["a", "a"],
    ),
]


@pytest.mark.parametrize(
    "overrides, key, value", BAD_VALUES, ids=[" ".join(c[0]) for c in BAD_VALUES]
)
def test_bad_value_raises_config_error_naming_key_and_value(overrides, key, value, small_csv):
    cfg = typed_config(*(o.replace("{csv}", small_csv.name) for o in overrides))
    with pytest.raises(config.ConfigError) as exc:
        config.validate(cfg, small_csv.parent)
    err = exc.value
    assert err.key == key
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(err.value)
    else:
        assert err.value == value
    message = str(err)
    assert message.startswith(f"{key}=")
    assert repr(value) in message
    assert err.allowed in message


def test_the_good_default_config_validates(small_csv):
    config.validate(typed_config(), small_csv.parent)
    cfg = typed_config("data=csv", f"data.path={small_csv.name}", "data.target=price")
    config.validate(cfg, small_csv.parent)


# --- checks that need the data's size ------------------------------------------------------------
def test_batch_larger_than_training_rows_is_rejected():
    cfg = typed_config("train.batch_size=50")
    with pytest.raises(config.ConfigError) as exc:
        config.validate_sizes(cfg, n_rows=20, n_features=5, n_train=16)
    assert exc.value.key == "train.batch_size" and exc.value.value == 50
    assert "(16)" in str(exc.value)


def test_pipeline_rejects_batch_larger_than_its_training_rows():
    n, fraction = 20, 0.2
    n_train = n - round(n * fraction)  # one split: round(n·fraction) rows held out
    cfg = typed_config(
        f"data.n={n}",
        f"train.test_fraction={fraction}",
        "train.batch_size=50",
        "tracking.enabled=false",
    )
    with pytest.raises(config.ConfigError) as exc:
        pipeline.run(cfg)
    assert exc.value.key == "train.batch_size"
    assert f"({n_train})" in str(exc.value)


# --- a bad value creates nothing -----------------------------------------------------------------
def test_bad_value_creates_no_mlflow_run(store_uri, experiment, tracked):
    with pytest.raises(config.ConfigError) as exc:
        pipeline.run(typed_config("optimizer.lr=-1", *tracked))
    assert exc.value.key == "optimizer.lr"
    assert runs_in(store_uri, experiment) == []
    # the same store and experiment do record a run once the value is good
    small = ["data.n=40", "train.epochs=1", "tracking.log_model=false"]
    outcome = pipeline.run(typed_config("optimizer.lr=0.001", *small, *tracked))
    assert [r.info.run_id for r in runs_in(store_uri, experiment)] == [outcome.run_id]


# --- the tutorial preset -------------------------------------------------------------------------
def test_tutorial_preset_sets_the_tutorial_protocol():
    cfg = typed_config("experiment=tutorial")
    assert (cfg.data.name, cfg.data.n) == ("linear", 360)  # the default data: the preset sets none
    assert cfg.data.standardize is False and cfg.data.standardize_target is False
    assert cfg.train.folds == 6
    assert cfg.train.cv == "sequential"
    assert cfg.train.reduction == "mean"
    assert cfg.train.batch_size == 10
    assert cfg.train.epochs == 18
    assert cfg.train.tol is None  # the tutorial never stops early: its logs run all 108 epochs
    assert cfg.optimizer.name == "momentum"
    assert cfg.optimizer.lr == pytest.approx(1e-3)
    assert cfg.optimizer.momentum == pytest.approx(0.9)
    assert cfg.schedule.name == "constant"
    assert cfg.tracking.log_steps is True
    config.validate(cfg)


def test_tutorial_preset_leaves_optimizer_values_but_lr_to_the_chosen_optimizer():
    cfg = compose_config("experiment=tutorial", "optimizer=adam")
    assert OmegaConf.to_container(cfg.optimizer) == {
        **OmegaConf.to_container(compose_config("optimizer=adam").optimizer),
        "lr": 1e-3,  # the tutorial's learning rate, whatever the optimizer
    }
    typed = config.to_object(cfg)
    assert isinstance(typed.optimizer, config.Adam)
    assert (typed.train.folds, typed.train.batch_size, typed.train.epochs) == (6, 10, 18)
    config.validate(typed)


def test_command_line_values_override_the_tutorial_preset():
    cfg = typed_config("experiment=tutorial", "train.epochs=3", "optimizer.lr=0.02")
    assert cfg.train.epochs == 3 and cfg.optimizer.lr == pytest.approx(0.02)
    assert cfg.train.folds == 6
