"""Optimizers and learning-rate schedules: one registry entry each, holding all lrexp knows of it.

An entry names its knobs as the config schema does (as Optax names them). Every float knob (``lr``,
``momentum``, ``b1``, ``decay_rate`` …) is passed in as an array, so one compiled training program
serves any values of them (and ``vmap`` can batch over them). Integer and boolean knobs
(``memory_size``, ``transition_steps``, ``centered`` …) fix the program's structure and are static.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

LrFn = Callable[[jax.Array], jax.Array]  # lr_t as a function of the optimizer step t
Knobs = Mapping[str, Any]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: how to build lr_t, and which of its knobs are floats or static."""

    build: Callable[[jax.Array, Knobs, Knobs, int], LrFn]  # (lr, floats, static, total_steps)
    floats: tuple[str, ...] = ()
    static: tuple[str, ...] = ()


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: its Optax builder, its knobs, and what the checks and the loop must know."""

    # (schedule, floats, static) -> the transformation
    build: Callable[[LrFn, Knobs, Knobs], optax.GradientTransformation]
    floats: tuple[str, ...]  # lr included (it goes to the schedule; the rest go to ``build``)
    static: tuple[str, ...] = ()
    # For an optimizer whose step is lr × gradient, so that plain gradient descent's stability
    # bound applies: the factor its float knobs stretch that bound by (heavy-ball β: 1 + β).
    stable_factor: Callable[[Mapping[str, float]], float] | None = None
    line_search: bool = False  # searches along a line: needs the loss and the full batch

    @property
    def gradient_scaled(self) -> bool:
        """Whether its step is lr × gradient, so that its stable lr depends on the loss's scale."""
        return self.stable_factor is not None


# --- schedules: lr_t as a function of the optimizer step t ---------------------------------------
def _constant(lr, floats, static, total_steps) -> LrFn:
    return lambda t: lr * jnp.ones_like(t, dtype=jnp.result_type(lr))


def _exponential(lr, floats, static, total_steps) -> LrFn:
    def schedule(t):
        p = t / static["transition_steps"]
        return lr * floats["decay_rate"] ** (jnp.floor(p) if static["staircase"] else p)

    return schedule


def _cosine_factor(t, decay_steps, alpha):
    frac = jnp.clip(t / decay_steps, 0.0, 1.0)
    return (1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)) + alpha


def _cosine(lr, floats, static, total_steps) -> LrFn:
    decay_steps = static["decay_steps"] or total_steps
    return lambda t: lr * _cosine_factor(t, decay_steps, floats["alpha"])


def _warmup_cosine(lr, floats, static, total_steps) -> LrFn:
    warmup = static["warmup_steps"]
    decay_steps = max((static["decay_steps"] or total_steps) - warmup, 1)

    def schedule(t):
        warm = lr * t / max(warmup, 1)
        return jnp.where(
            t < warmup, warm, lr * _cosine_factor(t - warmup, decay_steps, floats["alpha"])
        )

    return schedule


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_constant),
    "exponential": Schedule(_exponential, ("decay_rate",), ("transition_steps", "staircase")),
    "cosine": Schedule(_cosine, ("alpha",), ("decay_steps",)),
    "warmup_cosine": Schedule(_warmup_cosine, ("alpha",), ("warmup_steps", "decay_steps")),
}


# --- optimizers: Optax transformations from (schedule, float knobs, static knobs) ----------------
def _plain(knobs: Mapping[str, float]) -> float:
    return 1.0


def _heavy_ball(knobs: Mapping[str, float]) -> float:
    return 1.0 + knobs["momentum"]


_ADAM = ("lr", "b1", "b2", "eps")

OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(lambda schedule, f, s: optax.sgd(schedule), ("lr",), stable_factor=_plain),
    "momentum": Optimizer(
        lambda schedule, f, s: optax.sgd(schedule, momentum=f["momentum"]),
        ("lr", "momentum"),
        stable_factor=_heavy_ball,
    ),
    "nesterov": Optimizer(
        lambda schedule, f, s: optax.sgd(schedule, momentum=f["momentum"], nesterov=True),
        ("lr", "momentum"),
        stable_factor=_heavy_ball,
    ),
    "adam": Optimizer(
        lambda schedule, f, s: optax.adam(schedule, b1=f["b1"], b2=f["b2"], eps=f["eps"]), _ADAM
    ),
    "adamw": Optimizer(
        lambda schedule, f, s: optax.adamw(
            schedule, b1=f["b1"], b2=f["b2"], eps=f["eps"], weight_decay=f["weight_decay"]
        ),
        (*_ADAM, "weight_decay"),
    ),
    "rmsprop": Optimizer(
        lambda schedule, f, s: optax.rmsprop(
            schedule, decay=f["decay"], eps=f["eps"], momentum=f["momentum"], centered=s["centered"]
        ),
        ("lr", "decay", "eps", "momentum"),
        ("centered",),
    ),
    "adagrad": Optimizer(
        lambda schedule, f, s: optax.adagrad(
            schedule, initial_accumulator_value=f["initial_accumulator_value"], eps=f["eps"]
        ),
        ("lr", "initial_accumulator_value", "eps"),
    ),
    "lion": Optimizer(
        lambda schedule, f, s: optax.lion(
            schedule, b1=f["b1"], b2=f["b2"], weight_decay=f["weight_decay"]
        ),
        ("lr", "b1", "b2", "weight_decay"),
    ),
    "lbfgs": Optimizer(
        lambda schedule, f, s: optax.lbfgs(schedule, memory_size=s["memory_size"]),
        ("lr",),
        ("memory_size",),
        line_search=True,
    ),
}

# The names of the line-searching optimizers, for callers not yet reading


def _lookup(registry: Mapping[str, Any], key: str, name: str) -> Any:
    if name not in registry:
        raise ValueError(f"{key}={name!r}: must be one of {', '.join(sorted(registry))}")
    return registry[name]


def check_names(optimizer: str, schedule: str) -> None:
    """Raise ValueError naming the key and the choices when a name is not in the registry."""
    _lookup(OPTIMIZERS, "optimizer.name", optimizer)
    _lookup(SCHEDULES, "schedule.name", schedule)


def split_knobs(
    knobs: Knobs, entry: Optimizer | Schedule | None = None
) -> tuple[dict[str, float], tuple[tuple[str, Any], ...]]:
    """Split a group's knobs into float values (array inputs) and static structure (hashable), as
    ``entry`` declares them (by default the entry that ``knobs["name"]`` names)."""
    if entry is None:
        name = knobs["name"]
        entry = OPTIMIZERS[name] if name in OPTIMIZERS else _lookup(SCHEDULES, "name", name)
    given, declared = set(knobs) - {"name"}, {*entry.floats, *entry.static}
    if given != declared:
        raise ValueError(
            f"{knobs.get('name')!r} takes the knobs {sorted(declared)}, got {sorted(given)}"
        )
    floats = {k: float(v) for k, v in knobs.items() if k in entry.floats}
    static = tuple(sorted((k, v) for k, v in knobs.items() if k in entry.static))
    return floats, static


def make_schedule(name: str, lr: jax.Array, floats: Knobs, static: Knobs, total_steps: int) -> LrFn:
    """Build lr_t for the named schedule with base rate ``lr`` over ``total_steps`` steps."""
    schedule = _lookup(SCHEDULES, "schedule.name", name).build(lr, floats, static, total_steps)
    dtype = jnp.result_type(lr)
    return lambda t: schedule(jnp.asarray(t, dtype))  # step counts are ints: compute in lr's dtype


def make_optimizer(
    name: str, schedule: LrFn, floats: Knobs, static: Knobs
) -> optax.GradientTransformation:
    """Build the named Optax transformation, its learning rate following ``schedule``."""
    return _lookup(OPTIMIZERS, "optimizer.name", name).build(schedule, floats, static)
