"""The search space: Hydra sweep overrides → Optuna distributions, and a trial → overrides.

The syntax is Hydra's override grammar, read as Hydra's own Optuna sweeper reads it, so a space
written for one works in the other. Each entry is ``key=expression``:

    choice(a, b, c)  or  a,b,c        categorical: values or config group options
    range(start, stop, step)          integers start, start + step, … below stop (floats: stepped)
    interval(low, high)               a float in [low, high]
    int(interval(low, high))          an integer in [low, high]
    tag(log, interval(low, high))     the same on a log scale (needs 0 < low)
    a plain value                     fixed: passed to every trial as written

A later entry for a key replaces an earlier one, so the command line overrides the config's space.
(This module imports Optuna; its leading underscore keeps Hydra's plugin scan, which imports every
module under ``hydra_plugins`` at each start, from importing it in runs that do not sweep.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    ValueType,
)
from hydra.errors import CompactHydraException, OverrideParseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

SYNTAX = (
    "write choice(a, b), range(start, stop, step), interval(low, high), "
    "int(interval(low, high)) or tag(log, interval(low, high))"
)


class SearchSpaceError(CompactHydraException, ValueError):
    """A search space or sweep setting that cannot work: names it and says what is allowed.

    A CompactHydraException, so Hydra prints the message alone, without a stack trace.
    """

    def __init__(self, spec: str, allowed: str):
        self.spec, self.allowed = spec, allowed
        super().__init__(f"lrexp_optuna: bad search space: {spec}: {allowed}")


@dataclass(frozen=True)
class Space:
    """Where each searched key samples from, and the overrides every trial shares."""

    distributions: dict[str, BaseDistribution]  # override key (`optimizer.lr`, `+x`) → where
    fixed: list[str]  # plain overrides, as written

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """One trial's overrides: its sampled values (in the space's order), then the fixed ones."""
        return [f"{key}={_encode(params[key])}" for key in self.distributions] + self.fixed


def parse(entries: Sequence[str]) -> Space:
    """Read ``key=expression`` entries (config first, then command line) into a search space."""
    parser = OverridesParser.create()
    by_key: dict[str, Override] = {}
    for entry in entries:
        try:
            (override,) = parser.parse_overrides([entry])
        except OverrideParseException as e:
            first_line = e.message.strip().splitlines()[0]
            raise SearchSpaceError(
                entry, f"not a Hydra override ({first_line}); {SYNTAX}"
            ) from None
        key = override.get_key_element()
        by_key.pop(key, None)  # a later entry replaces the earlier one, and takes its place
        by_key[key] = override
    distributions = {k: distribution(o) for k, o in by_key.items() if o.is_sweep_override()}
    if not distributions:
        raise SearchSpaceError(
            "(no sweep)",
            "nothing to search: set hydra.sweeper.params or give a sweep on the command line, "
            f"e.g. 'optimizer.lr=tag(log, interval(1e-4, 0.1))'; {SYNTAX}",
        )
    fixed = [str(o.input_line) for o in by_key.values() if not o.is_sweep_override()]
    return Space(distributions, fixed)


def distribution(o: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    spec = str(o.input_line)
    sweep = o.value()
    tags = set(getattr(sweep, "tags", set()))
    if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
        raise SearchSpaceError(spec, "glob() is not supported: list the options with choice(...)")
    if tags - {"log"}:
        raise SearchSpaceError(spec, f"unknown tag {sorted(tags - {'log'})}: the only tag is log")
    if tags and not isinstance(sweep, IntervalSweep):
        raise SearchSpaceError(spec, "tag(log, ...) applies to interval(low, high) only")
    if isinstance(sweep, ChoiceSweep):
        choices = list(o.sweep_string_iterator())  # as written in an override: `null`, quoted
        if len(set(choices)) != len(choices):
            raise SearchSpaceError(spec, "a choice lists a value twice")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        values = list(o.sweep_iterator())
        if not values:
            raise SearchSpaceError(
                spec,
                "the range is empty: range(start, stop, step) needs start < stop for a step > 0",
            )
        low, high, step = min(values), max(values), abs(sweep.step)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(low, high, step=int(step))
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(sweep, IntervalSweep):
        low, high, log = sweep.start, sweep.end, "log" in tags
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise SearchSpaceError(spec, f"needs finite bounds low < high, got {low}, {high}")
        if log and low <= 0:
            raise SearchSpaceError(spec, f"a log interval needs low > 0, got {low}")
        if isinstance(low, int) and isinstance(high, int):  # int(interval(...))
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(spec, SYNTAX)  # pragma: no cover - the grammar has no other sweeps


def probes(space: Space, limit: int = 32) -> list[list[str]]:
    """Trials that try every combination of categorical choices (up to ``limit``), numbers low.

    Composing them before the search finds keys that do not exist and choices that do not go
    together (``optimizer=choice(sgd, momentum)`` with ``optimizer.momentum``), before any trial
    has run: Hydra's grammar has no conditional spaces.
    """
    categorical = {
        k: d.choices
        for k, d in space.distributions.items()
        if isinstance(d, CategoricalDistribution)
    }
    lows = {
        k: d.low
        for k, d in space.distributions.items()
        if not isinstance(d, CategoricalDistribution)
    }
    combos = itertools.islice(itertools.product(*categorical.values()), limit)
    return [space.overrides({**lows, **dict(zip(categorical, c, strict=True))}) for c in combos]


def describe(d: BaseDistribution) -> str:
    """A distribution in a few words, for the log: ``log [0.0001, 0.1]``, ``choice(sgd, adam)``."""
    if isinstance(d, CategoricalDistribution):
        return f"choice({', '.join(map(str, d.choices))})"
    assert isinstance(d, FloatDistribution | IntDistribution)
    kind = ("log " if d.log else "") + ("int " if isinstance(d, IntDistribution) else "")
    step = f" step {d.step}" if d.step not in (None, 1) else ""
    return f"{kind}[{d.low}, {d.high}]{step}"


def _encode(value: Any) -> str:
    """A sampled value as an override writes it (a float's repr reads back as the same float)."""
    return repr(value) if isinstance(value, float) else str(value)
