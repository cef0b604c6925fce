"""Command-line overrides parsed by Hydra's own grammar (``key=value``, sweeps, ``+``/``~``)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable

_parsing = threading.Lock()  # Hydra's parser is not known to be thread-safe (jobs log from threads)


def key_values(overrides: Iterable[str]) -> list[tuple[str, object]]:
    """(key, value) of each override; a sweep override's value is None. Hydra re-renders values
    in jobs (``false`` → ``False``): compare these, not the strings."""
    with _parsing:
        return _parse(tuple(overrides))


@functools.lru_cache(maxsize=1024)
def _parse(overrides: tuple[str, ...]) -> list[tuple[str, object]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [(o.get_key_element(), None if o.is_sweep_override() else o.value()) for o in parsed]
