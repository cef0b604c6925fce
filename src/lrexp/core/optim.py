"""Optimizers and learning-rate schedules, chosen by name from a registry.

Every float knob (``lr``, ``momentum``, ``b1``, ``decay_rate`` …) is passed in as an array, so one
compiled training program serves any values of them (and ``vmap`` can batch over them). Integer and
boolean knobs (``memory_size``, ``transition_steps``, ``centered`` …) fix the program's structure
and are static.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]
Knobs = Mapping[str, Any]


def split_knobs(knobs: Knobs) -> tuple[dict[str, float], tuple[tuple[str, Any], ...]]:
    """Split a group's knobs into float values (array inputs) and static structure (hashable)."""
    floats = {k: float(v) for k, v in knobs.items() if isinstance(v, float)}
    static = tuple(
        sorted((k, v) for k, v in knobs.items() if k != "name" and not isinstance(v, float))
    )
    return floats, static


# --- schedules: lr_t as a function of the optimizer step t ---------------------------------------
def _constant(lr, h, s, total_steps) -> Schedule:
    return lambda t: lr * jnp.ones_like(t, dtype=jnp.result_type(lr))


def _exponential(lr, h, s, total_steps) -> Schedule:
    def schedule(t):
        p = t / s["transition_steps"]
        return lr * h["decay_rate"] ** (jnp.floor(p) if s["staircase"] else p)

    return schedule


def _cosine_factor(t, decay_steps, alpha):
    frac = jnp.clip(t / decay_steps, 0.0, 1.0)
    return (1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)) + alpha


def _cosine(lr, h, s, total_steps) -> Schedule:
    decay_steps = s["decay_steps"] or total_steps
    return lambda t: lr * _cosine_factor(t, decay_steps, h["alpha"])


def _warmup_cosine(lr, h, s, total_steps) -> Schedule:
    warmup = s["warmup_steps"]
    decay_steps = max((s["decay_steps"] or total_steps) - warmup, 1)

    def schedule(t):
        warm = lr * t / max(warmup, 1)
        return jnp.where(t < warmup, warm, lr * _cosine_factor(t - warmup, decay_steps, h["alpha"]))

    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant,
    "exponential": _exponential,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
}


# --- optimizers: Optax transformations from (schedule, float knobs, static knobs) ----------------
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, h, s: optax.sgd(lr),
    "momentum": lambda lr, h, s: optax.sgd(lr, momentum=h["momentum"]),
    "nesterov": lambda lr, h, s: optax.sgd(lr, momentum=h["momentum"], nesterov=True),
    "adam": lambda lr, h, s: optax.adam(lr, b1=h["b1"], b2=h["b2"], eps=h["eps"]),
    "adamw": lambda lr, h, s: optax.adamw(
        lr, b1=h["b1"], b2=h["b2"], eps=h["eps"], weight_decay=h["weight_decay"]
    ),
    "rmsprop": lambda lr, h, s: optax.rmsprop(
        lr, decay=h["decay"], eps=h["eps"], momentum=h["momentum"], centered=s["centered"]
    ),
    "adagrad": lambda lr, h, s: optax.adagrad(
        lr, initial_accumulator_value=h["initial_accumulator_value"], eps=h["eps"]
    ),
    "lbfgs": lambda lr, h, s: optax.lbfgs(lr, memory_size=s["memory_size"]),
}

# Optimizers that search along a line: they need the loss function and the full batch.
LINE_SEARCH = frozenset({"lbfgs"})


def _lookup(registry: Mapping[str, Any], key: str, name: str) -> Any:
    if name not in registry:
        raise ValueError(f"{key}={name!r}: must be one of {', '.join(sorted(registry))}")
    return registry[name]


def check_names(optimizer: str, schedule: str) -> None:
    """Raise ValueError naming the key and the choices when a name is not in the registry."""
    _lookup(OPTIMIZERS, "optimizer.name", optimizer)
    _lookup(SCHEDULES, "schedule.name", schedule)


def make_schedule(
    name: str, lr: jax.Array, floats: Knobs, static: Knobs, total_steps: int
) -> Schedule:
    """Build lr_t for the named schedule with base rate ``lr`` over ``total_steps`` steps."""
    schedule = _lookup(SCHEDULES, "schedule.name", name)(lr, floats, static, total_steps)
    dtype = jnp.result_type(lr)
    return lambda t: schedule(jnp.asarray(t, dtype))  # step counts are ints: compute in lr's dtype


def make_optimizer(
    name: str, schedule: Schedule, floats: Knobs, static: Knobs
) -> optax.GradientTransformation:
    """Build the named Optax transformation, its learning rate following ``schedule``."""
    return _lookup(OPTIMIZERS, "optimizer.name", name)(schedule, floats, static)
