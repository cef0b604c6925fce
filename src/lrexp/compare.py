"""Compare runs read back from MLflow: a leaderboard, and an overlay plot of their loss curves.

python -m lrexp.compare                               # the runs of experiment lrexp, best first
python -m lrexp.compare --sweep <parent run id>       # the runs of one sweep
python -m lrexp.compare --sort gap_theta --top 5 --plot best.png

The table shows only the params whose values differ between the listed runs (``--all-columns``
shows them all): what is left is what the runs were compared on.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

KEY_METRICS = ("final_train_mse", "final_test_mse", "gap_theta", "excess_train_mse")
CONVERGED = "lrexp.converged"  # the tag each run's verdict sets: true, false (absent: not judged)
OBJECTIVE = "objective"  # the default sort column, as sweeps rank runs


class CompareError(Exception):
    """Bad input: the program ends with one line naming it, and exit status 2."""


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {n}")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m lrexp.compare", description=__doc__.split("\n")[0])
    p.add_argument(
        "--uri", default="sqlite:///mlflow.db", help="tracking URI (relative sqlite: cwd)"
    )
    p.add_argument("--experiment", default="lrexp", help="experiment to list (default: lrexp)")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="list only this sweep's child runs")
    p.add_argument(
        "--sort",
        metavar="METRIC",
        help="metric to sort by (default: cv_test_mse_mean where a run has folds, else "
        "final_test_mse); runs without it go last",
    )
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    p.add_argument("--top", type=_positive, metavar="N", help="list only the first N runs")
    p.add_argument("--plot", default="compare.png", help="overlay plot of the MSE curves (PNG)")
    p.add_argument(
        "--all-columns", action="store_true", help="show every param, not only those that differ"
    )
    return p.parse_args(argv)


def select_runs(uri: str, experiment: str, sweep: str | None) -> tuple[list[dict], str]:
    """The runs to compare (a sweep's children, or an experiment's runs but sweep parents)."""
    from lrexp.tracking import reader

    exp_id = reader.find_experiment(uri, experiment)
    if sweep is None:
        if exp_id is None:
            names = ", ".join(map(repr, reader.experiment_names(uri))) or "none"
            raise CompareError(
                f"--experiment={experiment!r}: no such experiment; there are: {names}"
            )
        runs = [r for r in reader.runs_of(uri, exp_id) if r["tags"].get("lrexp.sweep") != "true"]
        return runs, f"experiment {experiment!r}"
    parent = reader.find_run(uri, sweep)
    if parent is None or parent["tags"].get("lrexp.sweep") != "true":
        sweeps = [] if exp_id is None else reader.runs_of(uri, exp_id)
        ids = [r["run_id"] for r in sweeps if r["tags"].get("lrexp.sweep") == "true"]
        what = "no such run" if parent is None else f"run {parent['name']!r} is not a sweep"
        raise CompareError(
            f"--sweep={sweep}: {what}; sweeps in experiment {experiment!r}: "
            + (", ".join(ids[:20]) or "none")
        )
    return reader.child_runs(uri, parent["experiment_id"], sweep), f"sweep {sweep}"


def sort_value(run: dict, metric: str | None) -> float:
    """A run's value of ``metric`` (None: the sweep objective); NaN where it has none."""
    from lrexp.core.objective import objective

    value = objective(run["metrics"]) if metric is None else run["metrics"].get(metric, math.nan)
    return value if math.isfinite(value) else math.nan


def rank(runs: list[dict], metric: str | None, *, descending: bool = False) -> list[dict]:
    """Runs ordered by ``metric``; those without a finite value of it go last, in either order."""
    have = [r for r in runs if not math.isnan(sort_value(r, metric))]
    lack = [r for r in runs if math.isnan(sort_value(r, metric))]
    return sorted(have, key=lambda r: sort_value(r, metric), reverse=descending) + lack


def table(runs: list[dict], metric: str | None, *, all_columns: bool = False) -> pd.DataFrame:
    """One row per run: name, status, sort metric, key metrics, whether it converged, the params
    that differ, run id."""
    label = metric or OBJECTIVE
    metrics = [label, *(k for k in KEY_METRICS if k != label)]
    keys = sorted({k for r in runs for k in r["params"]})
    if not all_columns:
        keys = [k for k in keys if len({r["params"].get(k) for r in runs}) > 1]
    rows: list[dict[str, Any]] = [
        {
            "run": r["name"],
            "status": r["status"],
            label: sort_value(r, metric),
            **{k: r["metrics"].get(k, math.nan) for k in metrics[1:]},
            "converged": r["tags"].get(CONVERGED),
            **{k: r["params"].get(k) for k in keys},
            "run_id": r["run_id"],
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=["run", "status", *metrics, "converged", *keys, "run_id"])


def text_table(frame: pd.DataFrame) -> str:
    """The table as text: numbers to 6 significant digits, run names aligned left."""
    width = max(3, *(len(str(name)) for name in frame["run"]))
    frame = frame.rename(columns={"run": "run".ljust(width)})
    return frame.to_string(
        index=False,
        float_format=lambda v: f"{v:.6g}",
        na_rep="—",
        formatters={"run".ljust(width): lambda s: f"{s:<{width}}"},
    )


def write_overlay(uri: str, runs: list[dict], path: Path, title: str) -> int:
    """Plot the train and test MSE curves of ``runs`` into one PNG; return how many were drawn.

    A path ending in ``.svg`` gets lrexp's own SVG (no matplotlib needed).
    """
    from lrexp.tracking import reader
    from lrexp.tracking.sweep_summary import MAX_OVERLAY

    names = [r["name"] for r in runs]
    curves = {}
    for r in runs[:MAX_OVERLAY]:
        label = r["name"] if names.count(r["name"]) == 1 else f"{r['name']} ({r['run_id'][:8]})"
        train = reader.metric_curve(uri, r["run_id"], "train_mse")
        test = reader.metric_curve(uri, r["run_id"], "test_mse")
        if len(train[0]) or len(test[0]):
            curves[label] = (train, test)
    if curves:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".svg":
            from lrexp.report import plots

            path.write_text(plots.overlay(curves, title=title), encoding="utf-8")
        else:
            _overlay_png(curves, title, path)
    return len(curves)


def _overlay_png(curves: dict, title: str, path: Path) -> None:
    """The overlay drawn with matplotlib (imported only here: it takes half a second)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    train, test = fig.subplots(1, 2, sharey=True)
    for name, ((x_tr, tr), (x_te, te)) in curves.items():
        (line,) = train.plot(x_tr, tr, lw=1)
        test.plot(x_te, te, lw=1, color=line.get_color(), label=name)
    for ax, which in ((train, "train"), (test, "test")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{which} MSE")
        ax.grid(True, which="both", alpha=0.3)
    if len(curves) <= 12:
        test.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png", dpi=120)


def compare(args: argparse.Namespace) -> str:
    """The leaderboard's text; writes the overlay plot. Raises :class:`CompareError`."""
    from lrexp.tracking import store

    uri = store.resolve_uri(args.uri, os.getcwd())
    if (missing := store.missing_store(uri)) is not None:
        raise CompareError(f"--uri={args.uri}: no MLflow store at {missing}")
    runs, source = select_runs(uri, args.experiment, args.sweep)
    if not runs:
        return f"lrexp compare: no runs in {source}"
    if args.sort is not None and all(math.isnan(sort_value(r, args.sort)) for r in runs):
        names = sorted({k for r in runs for k in r["metrics"]})
        raise CompareError(
            f"--sort={args.sort}: no run of {source} has this metric; "
            f"available: {', '.join(names) or 'none (no run logged metrics)'}"
        )
    shown = rank(runs, args.sort, descending=args.desc)[: args.top]
    frame = table(shown, args.sort, all_columns=args.all_columns)
    order = "descending" if args.desc else "ascending"
    lines = [
        f"lrexp compare: {len(shown)} of {len(runs)} runs of {source}, "
        f"by {args.sort or OBJECTIVE} ({order}; runs without it last)",
        text_table(frame),
    ]
    if args.sort is None:
        lines.append(f"{OBJECTIVE}: cv_test_mse_mean where a run has folds, else final_test_mse")
    if (frame["converged"] == "false").any():
        from lrexp.core.verdict import EXCESS_TOL, percent

        lines.append(
            f"converged=false: the train MSE is over {percent(EXCESS_TOL)} of var(y) above least "
            "squares' (excess_train_mse), or it diverged; its lrexp.advice tag says what helps"
        )
    title = f"{len(shown)} runs of {source}"
    drawn = write_overlay(uri, shown, Path(args.plot), title)
    lines.append(
        f"overlay of {drawn} runs' MSE curves: {args.plot}" if drawn else "no curves to plot"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the leaderboard and write the overlay plot; return the exit status."""
    args = parse_args(argv)
    try:
        print(compare(args), flush=True)
    except CompareError as e:
        print(f"lrexp: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
