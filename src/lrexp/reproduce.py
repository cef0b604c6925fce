"""Re-run a logged run from its logged config, and check that θ comes out the same.

python -m lrexp.reproduce <run id>              # a new run, tagged lrexp.reproduction_of=<run id>
python -m lrexp.reproduce <run id> --no-track   # re-run and compare, log nothing
python -m lrexp.reproduce <run id> --data PATH  # a run on a data file: read PATH

The config read back from MLflow names files, and a store is shared data: a reproduction reads a
data file only where its own command line names it (``--data PATH``, or ``--logged-data`` to
confirm the logged ``data.path``), and its errors quote nothing of the file's content.

The config read back from MLflow is untrusted input: it is rebuilt through the command line's
schemas and checks (:func:`lrexp.config.from_container`, :func:`lrexp.config.validate`), and
nothing named in it is instantiated. On CPU the same code gives bit-identical results, so a
difference means the code, the libraries or the hardware changed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from lrexp import config
from lrexp.config import Config, ConfigError

RTOL, ATOL = 1e-6, 1e-9  # "θ matches": np.allclose(now, logged, rtol=RTOL, atol=ATOL)
LIBRARIES = ("lrexp.jax", "lrexp.jaxlib", "lrexp.optax", "lrexp.jax_backend")


class ReproduceError(Exception):
    """Bad input: the program ends with one line naming it, and exit status 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="python -m lrexp.reproduce", description=__doc__.split("\n")[0]
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the MLflow run to reproduce")
    p.add_argument(
        "--uri", default="sqlite:///mlflow.db", help="tracking URI (relative sqlite: cwd)"
    )
    p.add_argument("--no-track", action="store_true", help="do not log the reproduction as a run")
    p.add_argument("--data", metavar="PATH", help="a run on a file: read PATH, not its data.path")
    p.add_argument("--logged-data", action="store_true", help="a run on a file: read its data.path")
    return p.parse_args(argv)


def logged_config(text: str) -> Config:
    """Rebuild the typed config from the text of a logged ``config/config.yaml``."""
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("config/config.yaml", "…", f"is not valid YAML: {e}") from None
    return config.from_container(d)


def logged_overrides(text: str | None) -> list[str]:
    """The overrides of a logged ``config/overrides.yaml`` (none where it is missing)."""
    items = [] if text is None else yaml.safe_load(text)
    if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
        raise ReproduceError("config/overrides.yaml: must be a list of strings")
    return items


def logged_theta(text: str) -> np.ndarray:
    """θ (original units) from the text of a logged ``theta.json``."""
    try:
        theta = json.loads(text)["theta"]
        values = [float(v) for v in theta]
    except (ValueError, TypeError, KeyError) as e:
        raise ReproduceError(f"theta.json: has no list of numbers under 'theta' ({e})") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ReproduceError(f"theta.json: 'theta' must be non-empty and finite, not {values}")
    return np.asarray(values, dtype=np.float64)


def code_warnings(then: dict[str, str], now: dict[str, str]) -> list[str]:
    """Warnings where the run's code or libraries (its tags) differ from this process's."""
    old, new = then.get("lrexp.git_commit"), now.get("lrexp.git_commit")
    out = []
    if old is None:
        out.append("warning: the run's lrexp commit is unknown: cannot tell if this code made it")
    if new is None:
        out.append("warning: this code's commit is unknown (not a git checkout)")
    if old is not None and new is not None and old != new:
        out.append(f"warning: the run was made by lrexp commit {old}, this code is commit {new}")
    dirty = [w for w, tags in (("the run's code", then), ("this code", now)) if _dirty(tags)]
    if dirty:
        out.append(f"warning: {' and '.join(dirty)} had uncommitted changes")
    for k in LIBRARIES:
        if then.get(k) and then[k] != now.get(k):
            out.append(f"warning: {k} was {then[k]}, is {now.get(k)} now")
    return out


def _dirty(tags: dict[str, str]) -> bool:
    return tags.get("lrexp.git_dirty") == "true"


def reproduce(args: argparse.Namespace) -> int:
    """Re-run the run, print θ logged against θ now; return 0 if it matches, else 1."""
    from lrexp import pipeline
    from lrexp.pipeline import provenance
    from lrexp.tracking import lifecycle, reader, store

    uri = store.resolve_uri(args.uri, os.getcwd())
    if (missing := store.missing_store(uri)) is not None:
        raise ReproduceError(f"--uri={args.uri}: no MLflow store at {missing}")
    run = reader.find_run(uri, args.run_id)
    if run is None:
        raise ReproduceError(f"{args.run_id}: no such run in {uri}")
    if run["tags"].get("lrexp.sweep") == "true":
        raise ReproduceError(
            f"run {args.run_id} is a sweep's parent: reproduce one of its child runs "
            f"(python -m lrexp.compare --sweep {args.run_id} lists them)"
        )
    text = reader.artifact_text(uri, args.run_id, "config/config.yaml")
    theta_text = reader.artifact_text(uri, args.run_id, "theta.json")
    if text is None or theta_text is None:
        what = "config/config.yaml" if text is None else "theta.json"
        raise ReproduceError(f"run {args.run_id} ({run['status']}) has no {what} artifact")
    logged = logged_theta(theta_text)
    cfg = logged_config(text)
    tracked_as = {
        "uri": uri,
        "experiment": reader.experiment_name(uri, run["experiment_id"]),
        "run_name": f"reproduce {args.run_id}",
        "enabled": not args.no_track,
    }
    if hasattr(cfg.tracking, "skip_finished"):
        tracked_as["skip_finished"] = False  # the original run is that config's FINISHED run
    cfg = replace(cfg, tracking=replace(cfg.tracking, **tracked_as))
    cfg, base_dir = data_source(cfg, args, run["tags"].get("lrexp.base_dir"))
    config.validate(cfg, base_dir)
    overrides = logged_overrides(reader.artifact_text(uri, args.run_id, "config/overrides.yaml"))
    print(f"lrexp reproduce: run {args.run_id} ({run['name']}, {run['status']})", flush=True)
    for line in code_warnings(run["tags"], provenance.tags(cfg.train.dtype)):
        print(line, flush=True)
    from lrexp.pipeline import Diverged

    try:
        outcome = pipeline.run(cfg, base_dir=base_dir, overrides=overrides)
    except Diverged as e:
        return divergence_verdict(run, str(e))
    if (then := diverged_at(run)) is not None:
        print(f"θ differs: the original diverged at step {then[0]}, the reproduction did not")
        return 1
    if outcome.run_id is not None:
        lifecycle.set_tags(uri, outcome.run_id, {"lrexp.reproduction_of": args.run_id})
    print(theta_report(outcome.names, logged, np.asarray(outcome.theta, dtype=np.float64)))
    if outcome.run_id is not None:
        print(f"logged as run {outcome.run_id}, tagged lrexp.reproduction_of={args.run_id}")
    same = logged.shape == outcome.theta.shape and np.allclose(outcome.theta, logged, RTOL, ATOL)
    print("θ matches" if same else "θ differs", flush=True)
    return 0 if same else 1


def data_source(cfg: Config, args: argparse.Namespace, logged_dir: str | None) -> tuple:
    """The config and base directory to reproduce with: a data file is read only where the
    command line names it, ``--data PATH`` (in place of the logged one) or ``--logged-data``."""
    logged = Path(logged_dir) if logged_dir and Path(logged_dir).is_dir() else Path.cwd()
    if not isinstance(cfg.data, config.FileData):
        if args.data is not None or args.logged_data:
            flag = "--data" if args.data is not None else "--logged-data"
            raise ReproduceError(f"{flag}: run {args.run_id} reads no file (data={cfg.data.name})")
        return cfg, logged
    if args.data is not None and args.logged_data:
        raise ReproduceError("--data and --logged-data: give one (--data PATH reads PATH)")
    if args.data is not None:
        return replace(cfg, data=replace(cfg.data, path=os.path.abspath(args.data))), Path.cwd()
    if args.logged_data:
        return cfg, logged
    shown = cfg.data.path if len(cfg.data.path) <= 80 else cfg.data.path[:77] + "..."
    raise ReproduceError(
        f"run {args.run_id} read data.path={shown!r}: a stored config may name any file, so "
        "reproduce reads only the one its command line names: --data PATH, or --logged-data "
        "to read the logged data.path"
    )


def diverged_at(run: dict) -> tuple[int, int | None] | None:
    """The step at which a logged run diverged, and the fold (None: a single split)."""
    from lrexp.tracking import metric_names

    metrics = run["metrics"]
    for k in range(1, 1000):
        step = metrics.get(metric_names.fold_key(k, "diverged_step"))
        if step is not None:
            return int(step), k
        if metric_names.fold_key(k, "final_test_mse") not in metrics:
            break
    step = metrics.get("diverged_step")
    return None if step is None else (int(step), None)


def divergence_verdict(run: dict, error: str) -> int:
    """A reproduction that diverged against the original: 0 if it diverged at the same step (and
    fold), else 1, with one line saying which."""
    m = re.match(r"diverged at step (\d+)(?: \(fold (\d+)\))?", error)
    now = None if m is None else (int(m[1]), None if m[2] is None else int(m[2]))
    then = diverged_at(run)
    where = "" if now is None or now[1] is None else f" in fold {now[1]}"
    if now is not None and now == then:
        print(f"diverged at the same step ({now[0]}{where}): matches", flush=True)
        return 0
    was = "did not diverge" if then is None else f"diverged at step {then[0]}"
    print(f"differs: the reproduction {error.split(':')[0]}{where}; the original {was}")
    return 1


def theta_report(names: list[str], logged: np.ndarray, now: np.ndarray) -> str:
    """θ logged against θ now, one line per coefficient, and the largest absolute difference."""
    if logged.shape != now.shape:
        return f"θ logged has {logged.size} values, θ now has {now.size}"
    lines = [f"  {'':>10} {'θ logged':>20} {'θ now':>20} {'|Δ|':>10}"]
    for name, a, b in zip(names, logged, now, strict=True):
        lines.append(f"  {name:>10} {a:>20.12g} {b:>20.12g} {abs(a - b):>10.3g}")
    lines.append(f"  max |θ now − θ logged| = {np.max(np.abs(now - logged)):.3g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Reproduce a run; return the exit status: 0 θ matches (or it diverged at the same step),
    1 θ differs (or the reproduction failed), 2 bad input."""
    args = parse_args(argv)
    from lrexp.core.data import DataError

    try:
        return reproduce(args)
    except DataError as e:  # the data file's column names and cells stay out of the message
        print(f"lrexp: error: {e.key}={e.value!r}: {unquoted(e.allowed)}", file=sys.stderr)
        return 2
    except (ReproduceError, ConfigError) as e:
        print(f"lrexp: error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # the reproduction failed: one line, not a traceback
        first = unquoted((str(e).splitlines() or [""])[0])
        print(f"lrexp: error: reproducing failed: {type(e).__name__}: {first}", file=sys.stderr)
        return 1


def unquoted(text: str) -> str:
    """``text`` without what it quotes of a file: lists of names and quoted cells become …"""
    text = re.sub(r"\[[^\]]*\]?", "[…]", text)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)


if __name__ == "__main__":
    sys.exit(main())
