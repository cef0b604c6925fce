"""The command line, checked before Hydra runs: a bad override is reported in one line.

Hydra's own composition errors span several lines and end with advice about stack traces. For a
single run, lrexp composes the overrides once first (about 0.1 s) and, if that fails, prints
``lrexp: error: key=value: what is allowed`` and exits with status 2. The tracking URI and the
experiment are checked too (:func:`tracking_error`), so that no run trains only to find it
cannot be stored. Multiruns and Hydra's own flags (``--cfg``, ``--help``, …) go to Hydra
unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields, is_dataclass


def _value(overrides: list[str], key: str) -> str:
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return "?"


def _explain(e: Exception, overrides: list[str]) -> str:
    from hydra.errors import MissingConfigException, OverrideParseException

    first = str(e).strip().splitlines()[0]
    cause = e.__cause__
    key = getattr(cause, "full_key", None)
    if key and is_dataclass(getattr(cause, "object_type", None)):
        allowed = [f.name for f in fields(cause.object_type)]
        group = key.rpartition(".")[0] or "the config"
        if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
            return f"{key}={_value(overrides, key)}: no such key in {group}; allowed: " + ", ".join(
                allowed
            )
        detail = str(cause).strip().splitlines()[0]
        return f"{key}={_value(overrides, key)}: {detail}"
    if isinstance(e, MissingConfigException):
        missing = re.search(r"Could not find '([^/']+)/([^']+)'", str(e))
        options = [
            o for o in re.findall(r"^\t(\S+)$", str(e), flags=re.M) if not o.endswith("_schema")
        ]  # the schemas are not options to choose
        if missing:
            group, option = missing.groups()
            return f"{group}={option}: no such option; allowed: {', '.join(options)}"
    if isinstance(e, OverrideParseException):
        return _unparsable(overrides, first)
    if key := getattr(e, "full_key", None):  # OmegaConf's own (an interpolation: ${oops})
        return f"{key}={_value(overrides, key)}: {first}; interpolations must resolve"
    return first


def _unparsable(overrides: list[str], reason: str) -> str:
    """Name the override Hydra's grammar rejects, with what the grammar allows."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except Exception:
            key, _, value = o.partition("=")
            return (
                f"{key}={value}: cannot be parsed ({reason}); allowed: key=value, lists as "
                "[a,b], strings with spaces or brackets in quotes"
            )
    return f"cannot parse the overrides: {reason}"


def error(overrides: list[str]) -> str | None:
    """Why ``overrides`` do not compose into a valid config, in one line; None if they do."""
    from hydra import compose, initialize_config_module

    from lrexp import config

    if (schema := _schema_choice(overrides)) is not None:
        return schema

    try:
        with initialize_config_module(version_base="1.3", config_module="lrexp.conf"):
            cfg = compose("config", overrides=overrides)
        typed = config.to_object(cfg)
    except config.ConfigError as e:
        return str(e)
    except Exception as e:  # Hydra's and OmegaConf's composition errors
        if type(e).__name__ == "MissingMandatoryValue":
            return None  # a required value (data.path=???): the run reports it, naming the key
        return _explain(e, overrides)
    problem = tracking_error(typed.tracking.enabled, typed.tracking.uri, typed.tracking.experiment)
    return problem or _run_dir_error(overrides)


def tracking_error(enabled: bool, uri: str, experiment: str) -> str | None:
    """Why runs cannot be stored at tracking URI ``uri`` in ``experiment``, in one line (checked
    in seconds, without MLflow: scheme, reachability, a writable directory, a sound store, the
    experiment's name and whether it was deleted); None when they can."""
    from lrexp.tracking import store

    if not enabled:
        return None
    resolved = store.resolve_uri(uri, os.getcwd())
    problem = store.problem(resolved)
    if problem is not None:
        return f"tracking.uri={uri}: {problem}"
    problem = store.experiment_problem(resolved, experiment)
    if problem is not None:
        shown = experiment if len(experiment) <= 60 else experiment[:57] + "..."
        return f"tracking.experiment={shown}: {problem}"
    return None


def options(group: str) -> list[str]:
    """The options of a config group: its YAML files (its ``*_schema`` entries are internal)."""
    from importlib.resources import files

    folder = files("lrexp.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _schema_choice(overrides: list[str]) -> str | None:
    """``optimizer=adam_schema`` refused: a schema, not an option (it leaves name '???')."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if "." not in key and value.endswith("_schema"):
            return f"{key}={value}: an internal schema, not an option; allowed: " + ", ".join(
                options(key)
            )
    return None


def check(argv: list[str]) -> str | None:
    """The one-line error for a single run's command line; None for multiruns and Hydra flags."""
    if any(a.startswith("-") for a in argv):
        return None
    return error(argv)


def _run_dir_error(overrides: list[str]) -> str | None:
    """Why Hydra could not make the run's output directory (``hydra.run.dir``); None when it can.
    Made here, as Hydra would make it next: Hydra's own failure is a traceback."""
    given = _value(overrides, "hydra.run.dir")
    if given == "?" or "${" in given:  # the default, or interpolations (${now:...})
        return None
    try:
        os.makedirs(given, exist_ok=True)
    except OSError as e:
        return f"hydra.run.dir={given}: must be a directory lrexp can make ({e.strerror})"
    return None
