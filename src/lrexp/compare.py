"""Compare runs read back from MLflow: a leaderboard, and an overlay plot of their loss curves.

python -m lrexp.compare                               # the runs of experiment lrexp, best first
python -m lrexp.compare --sweep <parent run id>       # the runs of one sweep
python -m lrexp.compare --sort gap_theta --top 5 --plot best.png
python -m lrexp.compare --all                         # failed and diverged runs ranked too
python -m lrexp.compare --sweep <id> --html report.html   # also one self-contained HTML page

The table shows only the params whose values differ between the listed runs (``--all-columns``
shows them all, ``--columns`` picks them), wrapped to the terminal's width: what is left is what
the runs were compared on. Failed and diverged runs are listed apart, below, with their reason.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from lrexp.report.table import left_out_lines, text_table

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
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument(
        "--all-columns", action="store_true", help="show every param, not only those that differ"
    )
    p.add_argument(
        "--columns",
        metavar="KEYS",
        type=lambda text: [k.strip() for k in text.split(",") if k.strip()],
        help="comma-separated params or metrics to show (instead of the params that differ)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="rank and plot failed and diverged runs too (default: listed apart, below)",
    )
    p.add_argument(
        "--highlight",
        type=_positive,
        default=5,
        metavar="K",
        help="runs drawn in colour in the overlay, with a legend (default 5; the rest grey)",
    )
    return p.parse_args(argv)


def select_runs(uri: str, experiment: str, sweep: str | None) -> tuple[list[dict], str, int]:
    """The runs to compare (a sweep's children, or an experiment's runs but sweep parents), a
    name for them, and how many skipped runs were left out (their original run is gone)."""
    from lrexp.tracking import reader

    exp_id = reader.find_experiment(uri, experiment)
    if sweep is None:
        if exp_id is None:
            names = ", ".join(map(repr, reader.experiment_names(uri))) or "none"
            raise CompareError(
                f"--experiment={experiment!r}: no such experiment; there are: {names}"
            )
        runs = [r for r in reader.runs_of(uri, exp_id) if r["tags"].get("lrexp.sweep") != "true"]
        runs, orphans = with_original_params(uri, runs)
        return runs, f"experiment {experiment!r}", orphans
    parent = reader.find_run(uri, sweep)
    if parent is None or parent["tags"].get("lrexp.sweep") != "true":
        sweeps = [] if exp_id is None else reader.runs_of(uri, exp_id)
        ids = [r["run_id"] for r in sweeps if r["tags"].get("lrexp.sweep") == "true"]
        what = "no such run" if parent is None else f"run {parent['name']!r} is not a sweep"
        raise CompareError(
            f"--sweep={sweep}: {what}; sweeps in experiment {experiment!r}: "
            + (", ".join(ids[:20]) or "none")
        )
    runs = reader.child_runs(uri, parent["experiment_id"], sweep)
    runs, orphans = with_original_params(uri, runs)
    return runs, f"sweep {sweep}", orphans


SKIPPED_FOR = "lrexp.skipped_for"  # the tag of a run skipped for an identical FINISHED run


def with_original_params(uri: str, runs: list[dict]) -> tuple[list[dict], int]:
    """Runs skipped by ``tracking.skip_finished`` (metrics, no params) given the params of the
    run they point to; those whose original is gone are left out, and counted."""
    from lrexp.tracking import reader

    by_id = {r["run_id"]: r for r in runs}
    out = []
    for r in runs:
        original_id = r["tags"].get(SKIPPED_FOR)
        if original_id is None or r["params"]:
            out.append(r)
            continue
        original = by_id.get(original_id) or reader.find_run(uri, original_id)
        if original is not None:
            out.append({**r, "params": original["params"]})
    return out, len(runs) - len(out)


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


def table(
    runs: list[dict],
    metric: str | None,
    *,
    all_columns: bool = False,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """One row per run: name, status, sort metric, key metrics, whether it converged, the params
    that differ (or every param, or ``columns``: params or metrics), run id."""
    label = metric or OBJECTIVE
    metrics = [label, *(k for k in KEY_METRICS if k != label)]
    keys = sorted({k for r in runs for k in r["params"]})
    if columns is not None:
        keys = [k for k in columns if k not in metrics]
    elif not all_columns:
        keys = [k for k in keys if len({r["params"].get(k) for r in runs}) > 1]
    rows: list[dict[str, Any]] = [
        {
            "run": r["name"],
            "status": r["status"],
            label: sort_value(r, metric),
            **{k: r["metrics"].get(k, math.nan) for k in metrics[1:]},
            "converged": r["tags"].get(CONVERGED),
            **{k: r["params"].get(k, r["metrics"].get(k)) for k in keys},
            "run_id": r["run_id"],
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=["run", "status", *metrics, "converged", *keys, "run_id"])


def write_overlay(uri: str, runs: list[dict], path: Path, title: str, highlight: int = 5) -> int:
    """Plot the train and test MSE curves of ``runs`` (best first) into one PNG: the best
    ``highlight`` in colour with a legend below, the rest grey; return how many were drawn.

    A path ending in ``.svg`` gets lrexp's own SVG (no matplotlib needed).
    """
    from lrexp.report import plots, png
    from lrexp.tracking.sweep_summary import MAX_OVERLAY, overlay_curves

    names = [r["name"] for r in runs]
    labels = [
        (r["name"] if names.count(r["name"]) == 1 else f"{r['name']} ({r['run_id'][:8]})", r)
        for r in runs[:MAX_OVERLAY]
    ]
    curves = overlay_curves(uri, [(label, r["run_id"]) for label, r in labels])
    scores = {label: sort_value(r, None) for label, r in labels}
    if curves:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".svg":
            svg = plots.overlay(curves, title, scores=scores, total=len(runs), highlight=highlight)
            path.write_text(svg, encoding="utf-8")
        else:
            heading = plots.overlay_title(title, len(curves), len(runs), highlight)
            png.overlay(curves, scores, heading, highlight, path)
    return len(curves)


def apart(runs: list[dict], include: bool) -> tuple[list[dict], list[tuple[dict, str]]]:
    """The runs to rank and plot, and those left out (with ``include`` none) with their reason:
    failed, killed or diverged (see :func:`lrexp.tracking.leaderboard.failure`)."""
    from lrexp.tracking.leaderboard import failure

    if include:
        return runs, []
    reasons = [(r, failure(r)) for r in runs]
    return [r for r, why in reasons if why is None], [(r, w) for r, w in reasons if w is not None]


def compare(args: argparse.Namespace) -> str:
    """The leaderboard's text; writes the overlay plot. Raises :class:`CompareError`."""
    from lrexp.tracking import store

    uri = store.resolve_uri(args.uri, os.getcwd())
    if (missing := store.missing_store(uri)) is not None:
        raise CompareError(f"--uri={args.uri}: no MLflow store at {missing}")
    runs, source, orphans = select_runs(uri, args.experiment, args.sweep)
    if not runs:
        return f"lrexp compare: no runs in {source}"
    if args.sort is not None and all(math.isnan(sort_value(r, args.sort)) for r in runs):
        names = sorted({k for r in runs for k in r["metrics"]})
        raise CompareError(
            f"--sort={args.sort}: no run of {source} has this metric; "
            f"available: {', '.join(names) or 'none (no run logged metrics)'}"
        )
    healthy, left_out = apart(runs, args.all)
    shown = rank(healthy, args.sort, descending=args.desc)[: args.top]
    order = "descending" if args.desc else "ascending"
    lines = [
        f"lrexp compare: {len(shown)} of {len(runs)} runs of {source}, "
        f"by {args.sort or OBJECTIVE} ({order}; runs without it last)"
    ]
    if shown:
        frame = table(shown, args.sort, all_columns=args.all_columns, columns=args.columns)
        lines.append(text_table(frame))
        lines += notes(frame, args.sort)
    lines += left_out_lines(left_out)
    if orphans:
        lines.append(f"{orphans} skipped runs left out: the run each was skipped for is gone")
    title = f"{len(shown)} runs of {source}"
    drawn = write_overlay(uri, shown, Path(args.plot), title, args.highlight) if shown else 0
    lines.append(
        f"overlay of {drawn} runs' MSE curves: {args.plot}" if drawn else "no curves to plot"
    )
    if args.html and shown:
        from lrexp.tracking.sweep_report import write_html

        scores = [sort_value(r, args.sort) for r in shown]
        lines.append(write_html(uri, shown, frame, args.sort or OBJECTIVE, scores, Path(args.html)))
    width = shutil.get_terminal_size().columns
    return "\n".join(
        x if "\n" in x else textwrap.fill(x, width, subsequent_indent="  ") for x in lines
    )


def notes(frame: pd.DataFrame, sort: str | None) -> list[str]:
    """What the objective and ``converged=false`` mean, where the table shows them."""
    out = []
    if sort is None:
        out.append(f"{OBJECTIVE}: cv_test_mse_mean where a run has folds, else final_test_mse")
    if (frame["converged"] == "false").any():
        from lrexp.core.verdict import EXCESS_TOL, percent

        out.append(
            f"converged=false: the train MSE is over {percent(EXCESS_TOL)} of var(y) above least "
            "squares' (excess_train_mse), or it diverged; its lrexp.advice tag says what helps"
        )
    return out


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
