"""Every optimizer and schedule is described in four places that must agree: its registry entry
(``lrexp.core.optim``), its schema (``config.SCHEMAS``), its YAML option (``conf/<group>/``) and
the entry's float and static knobs (the schema's float fields, and its int and bool fields)."""

from __future__ import annotations

import typing
from dataclasses import asdict, fields
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from conftest import typed_config

from lrexp import config, pipeline
from lrexp.core import diagnostics, model, optim

CONF = Path(__file__).resolve().parents[1] / "conf"
REGISTRIES = {"optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES}


def yaml_options(group: str) -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((CONF / group).glob("*.yaml"))}


def knob_kinds(schema: type) -> dict[str, str]:
    """The schema's knobs (its fields but ``name``) as "float" or "static" (int, bool, or null)."""
    kinds = {}
    for name, tp in typing.get_type_hints(schema).items():
        (base,) = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if name != "name":
            kinds[name] = {float: "float", int: "static", bool: "static"}.get(base, repr(base))
    return kinds


# Every name any of the three places knows, so that one missing from a place fails by name.
OPTIONS = sorted(
    (group, name)
    for group, registry in REGISTRIES.items()
    for name in {*registry, *config.SCHEMAS[group], *yaml_options(group)}
)


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_registry_schemas_and_yaml_offer_the_same_options(group):
    registry, schemas = set(REGISTRIES[group]), set(config.SCHEMAS[group])
    files = set(yaml_options(group))
    assert registry == schemas == files, (
        f"{group}: registry only {sorted(registry - schemas - files)}, schemas only "
        f"{sorted(schemas - registry - files)}, YAML only {sorted(files - registry - schemas)}"
    )


def test_optimizer_and_schedule_names_are_distinct():
    # split_knobs finds a group's entry by its name alone
    assert not set(optim.OPTIMIZERS) & set(optim.SCHEDULES)


@pytest.mark.parametrize("group, name", OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_registry_schema_and_yaml_name_the_same_knobs(group, name):
    path = CONF / group / f"{name}.yaml"
    assert name in REGISTRIES[group], f"{group}={name}: no entry in optim.{group.upper()}S"
    assert name in config.SCHEMAS[group], f"{group}={name}: no schema in config.SCHEMAS"
    assert path.is_file(), f"{group}={name}: no {path}"
    entry, schema, values = (
        REGISTRIES[group][name],
        config.SCHEMAS[group][name],
        yaml_options(group)[name],
    )
    kinds = knob_kinds(schema)
    assert "name" in {f.name for f in fields(schema)}
    assert values["name"] == name
    assert values["defaults"] == [f"{name}_schema"]
    assert set(values) - {"defaults", "name"} == set(kinds), f"{path.name} vs {schema.__name__}"
    assert len({*entry.floats, *entry.static}) == len(entry.floats) + len(entry.static)
    assert set(entry.floats) == {k for k, kind in kinds.items() if kind == "float"}
    assert set(entry.static) == {k for k, kind in kinds.items() if kind == "static"}
    checked = {k for k, tp in typing.get_type_hints(schema).items() if tp is not bool}
    assert checked - {"name"} <= set(config.RULES), "a rule checks every knob's value"


def test_optimizers_take_lr_and_schedules_do_not():
    # lr is the schedule's base rate: every optimizer has one, no schedule adds another
    assert all("lr" in o.floats for o in optim.OPTIMIZERS.values())
    assert not any("lr" in s.floats for s in optim.SCHEDULES.values())


# --- every entry builds and runs under jit -------------------------------------------------------
def tiny_problem():
    """16 rows of y = 3 + 2x1 − x2: TSSE's Hessian ≈ 32·I, so every YAML lr steps downhill."""
    X = jax.random.normal(jax.random.key(0), (16, 2), jnp.float32)
    return X, 3.0 + X @ jnp.asarray([2.0, -1.0])


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_builds_and_takes_a_jitted_step_downhill(name):
    floats, static = optim.split_knobs(asdict(typed_config(f"optimizer={name}").optimizer))
    X, y = tiny_problem()

    def loss(theta):
        return model.tsse(theta, X, y)

    @jax.jit
    def step(theta, knobs):
        knobs = dict(knobs)
        schedule = optim.make_schedule("constant", knobs.pop("lr"), {}, {}, 10)
        tx = optim.make_optimizer(name, schedule, knobs, dict(static))
        value, grad = jax.value_and_grad(loss)(theta)
        search = {"value": value, "grad": grad, "value_fn": loss}
        extra = search if optim.OPTIMIZERS[name].line_search else {}
        updates, _ = tx.update(grad, tx.init(theta), theta, **extra)
        return optax.apply_updates(theta, updates)

    theta0 = jnp.zeros(3, jnp.float32)
    theta1 = step(theta0, {k: jnp.asarray(v, jnp.float32) for k, v in floats.items()})
    assert np.all(np.isfinite(theta1))
    assert loss(theta1) < loss(theta0)


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_every_schedule_builds_a_rate_in_zero_to_lr_under_jit(name):
    floats, static = optim.split_knobs(asdict(typed_config(f"schedule={name}").schedule))

    @jax.jit
    def rates(lr, knobs):
        schedule = optim.make_schedule(name, lr, knobs, dict(static), 100)
        return jax.vmap(schedule)(jnp.arange(120))

    lr = 0.5
    values = np.asarray(rates(jnp.asarray(lr), {k: jnp.asarray(v) for k, v in floats.items()}))
    assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= lr * (1 + 1e-6)))


# --- what the entries tell the rest of lrexp -----------------------------------------------------
@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_only_gradient_scaled_optimizers_warn_of_an_unstable_lr(name):
    floats, _ = optim.split_knobs(asdict(typed_config(f"optimizer={name}").optimizer))
    spread = diagnostics.Spectrum(n=100, lam_max=1.0, lam_min=0.5)  # plain GD's stable lr: 1
    knobs = {**floats, "lr": 10.0}
    checks = diagnostics.check(
        spread, batch_size=None, optimizer=name, knobs=knobs, dtype="float64"
    )
    entry = optim.OPTIMIZERS[name]
    assert checks.stable_lr == pytest.approx(1.0)
    assert any("exceeds the largest stable" in w for w in checks.warnings) == entry.gradient_scaled
    if entry.gradient_scaled:
        assert entry.stable_factor(floats) >= 1.0


def test_line_search_optimizers_are_those_the_pipeline_gives_the_full_batch():
    assert {n for n, o in optim.OPTIMIZERS.items() if o.line_search} == {"lbfgs"}
    spec = pipeline.loop_spec(typed_config("optimizer=lbfgs", "train.batch_size=10"), 100)
    assert spec.batch_size is None


def test_split_knobs_refuses_knobs_the_entry_does_not_declare():
    with pytest.raises(ValueError, match="b1"):
        optim.split_knobs({"name": "sgd", "lr": 0.1, "b1": 0.9})
    with pytest.raises(ValueError, match="momentum"):
        optim.split_knobs({"name": "momentum", "lr": 0.1})
    assert optim.split_knobs(
        {"name": "rmsprop", "lr": 1, "decay": 0.9, "eps": 1e-8, "momentum": 0.0, "centered": True}
    ) == (
        {"lr": 1.0, "decay": 0.9, "eps": 1e-8, "momentum": 0.0},
        (("centered", True),),
    )
