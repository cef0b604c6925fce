"""What a run's records hold, built from its results as plain values: the curves sampled for
MLflow's charts, ``history.csv`` (every epoch) and ``history_steps.csv`` (every step), θ as
``theta.json``, the figures, and the model's input example. :mod:`lrexp.pipeline.record` sends
them through the tracking layer."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import numpy as np

from lrexp.core import data, landscape, results
from lrexp.report import landscape as landscape_svg
from lrexp.report import plots

if TYPE_CHECKING:
    from lrexp.pipeline.outcome import Outcome
    from lrexp.pipeline.prepare import Prepared


PLOTTED_ROWS = 2000  # at most this many train and test rows in fitted_vs_actual.svg


def sample_steps(curves: dict[str, np.ndarray], max_points: int) -> np.ndarray:
    """At most ``max_points`` epochs, evenly spaced, always with the first, the last and the
    best (lowest test and train MSE) at their true epochs."""
    rows = max((len(c) for c in curves.values()), default=0)
    if rows <= max_points:
        return np.arange(rows)
    keep = []
    for key in ("test_mse", "train_mse"):
        c = np.asarray(curves.get(key, []), dtype=np.float64)
        if np.isfinite(c).any():
            keep.append(int(np.nanargmin(np.where(np.isfinite(c), c, np.nan))))
    keep = sorted(set(keep) - {0, rows - 1})
    spaced = np.linspace(0, rows - 1, max_points - len(keep)).round().astype(int)
    return np.unique(np.concatenate([spaced, keep]).astype(int))


def history_csv(curves: dict[str, np.ndarray]) -> str:
    """Every curve at every epoch as CSV (``epoch`` first); shorter fold curves end early."""
    rows = max((len(c) for c in curves.values()), default=0)
    table = np.full((rows, len(curves) + 1), np.nan)
    table[:, 0] = np.arange(rows)
    for j, c in enumerate(curves.values(), start=1):
        table[: len(c), j] = c
    out = io.StringIO()
    out.write(",".join(["epoch", *curves]) + "\n")
    np.savetxt(out, table, delimiter=",", fmt="%.9g")
    return out.getvalue().replace("nan", "")


def run_curves(
    p: Prepared, folds: list[results.FoldResult], names: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The run's per-epoch curves (:func:`results.curves`), and the fold of each row; in
    sequential CV, one model's curves through the folds in turn: epoch 0, then each fold's epochs
    (a fold's row 0 is the previous fold's last θ, so it is left out)."""
    if not p.sequential:
        return results.curves(folds, names), None
    per_fold = [results.fold_curves(f, names) for f in folds]
    curves = {k: np.concatenate([c[k][(i > 0) :] for i, c in enumerate(per_fold)])
              for k in per_fold[0]}  # fmt: skip
    fold = np.concatenate([np.full(len(c["train_mse"]) - (i > 0), i + 1)
                           for i, c in enumerate(per_fold)])  # fmt: skip
    return curves, fold


def steps_csv(p: Prepared, folds: list[results.FoldResult], names: list[str]) -> str | None:
    """Every logged optimizer step as CSV: fold, epoch, step, batch_mse and θ (original units)
    after the step; in sequential CV epochs and steps run on through the folds. None if the run
    logged no steps (``tracking.log_steps``)."""
    tables, epoch0, step0 = [], 0, 0
    for i, f in enumerate(folds):
        h = f.fit.steps_history
        if h is None:
            return None
        theta = p.scalers[i].to_original(h.theta)
        table = np.column_stack([np.full(len(h.step), i + 1), h.epoch + epoch0, h.step + step0,
                                 h.batch_mse, theta])  # fmt: skip
        tables.append(table)
        if p.sequential:
            epoch0, step0 = epoch0 + f.fit.epochs_run, step0 + f.fit.steps
    out = io.StringIO()
    out.write(",".join(["fold", "epoch", "step", "batch_mse", *names]) + "\n")
    np.savetxt(
        out, np.concatenate(tables), delimiter=",", fmt=["%d"] * 3 + ["%.9g"] * (1 + len(names))
    )
    return out.getvalue()


def history_files(p: Prepared, folds: list[results.FoldResult], names: list[str]) -> tuple:
    """The run's curves, and its ``history.csv`` (and ``history_steps.csv``, where it logged
    steps) as artifacts."""
    curves, fold = run_curves(p, folds, names)
    files = {"history.csv": history_csv(curves if fold is None else {"fold": fold, **curves})}
    steps = steps_csv(p, folds, names)
    if steps is not None:
        files["history_steps.csv"] = steps
    return curves, files


def example_rows(p: Prepared) -> list[list[float | str]]:
    """The model's input example: the first rows of the data as the file held them (a one-hot
    group as its category's name, in :func:`~lrexp.core.data.input_columns` order)."""
    ds = p.dataset
    return data.raw_rows(ds.X[:5], ds.feature_names, ds.categories)


def output_files(p: Prepared, outcome: Outcome, curves: dict[str, np.ndarray]) -> dict[str, str]:
    """θ (``theta.json``, with the categories a model of it needs) and the figures."""
    ds, folds, names = outcome.dataset, outcome.folds, outcome.names
    theta = {
        "names": names,
        "theta": outcome.theta.tolist(),
        "theta_star": outcome.theta_star.tolist(),
        "theta_true": None if ds.true_theta is None else ds.true_theta.tolist(),
        "folds": [{"theta": f.theta.tolist(), "theta_star": f.theta_star.tolist()} for f in folds],
        "features": list(ds.feature_names),  # with "categories" and "example": what a model
        "categories": ds.categories,  # of θ needs; a one-hot group's first category: no feature
        "columns": data.input_columns(ds.feature_names, ds.categories),  # a model's raw input
        "example": example_rows(p),  # raw rows of "columns"
    }
    optimal = float(np.mean([f.optimum["mse"] for f in folds]))
    shown = len(folds) - 1 if p.sequential else 0  # sequential: the one model, after every fold
    # A figure of every row would be megabytes of SVG (and seconds) at 1e6 rows: evenly spaced
    # rows of each set, which the random split has already shuffled.
    tr, te = (rows[:: -(-len(rows) // PLOTTED_ROWS)] for rows in p.parts[shown])
    w = folds[shown].theta

    def fitted(rows):
        return w[0] + np.asarray(ds.X[rows], dtype=np.float64) @ w[1:]

    return {
        "theta.json": json.dumps(theta, indent=2),
        **({"categories.json": json.dumps(ds.categories, indent=2)} if ds.categories else {}),
        "plots/loss_curve.svg": plots.loss_curve(
            curves, optimal, 1 if p.sequential else len(folds), p.title
        ),
        "plots/fitted_vs_actual.svg": plots.fitted_vs_actual(
            ds.y[tr], fitted(tr), ds.y[te], fitted(te), ds.target_name
        ),
        **landscape_files(p, folds),
    }


def landscape_path(p: Prepared, folds: list[results.FoldResult]) -> tuple[int, np.ndarray, str]:
    """Which fit's landscape to draw (its split), its path of θ (original units) and what that
    is: the only fit, or fold 1 of k; in sequential CV the one model through every fold, over
    the last fold's training rows (where it ends). Step by step where the run logged its steps
    (``tracking.log_steps``), else after each epoch."""
    k = len(folds)
    if p.sequential:
        path = np.concatenate([f.trajectory[(j > 0) :] for j, f in enumerate(folds)])
        return k - 1, path, (
            f"θ after each epoch of the one model through all {k} folds in turn, drawn over "
            f"fold {k}'s train rows"
        )  # fmt: skip
    path, h, each = folds[0].trajectory, folds[0].fit.steps_history, "epoch"
    if h is not None:
        path, each = np.concatenate([path[:1], p.scalers[0].to_original(h.theta)]), "step"
    where = f"fold 1 of {k}, on its train rows" if k > 1 else "the run's fit, on its train rows"
    return 0, path, f"θ after each {each}; {where}"


def landscape_files(p: Prepared, folds: list[results.FoldResult]) -> dict[str, str]:
    """``plots/landscape.svg`` and ``landscape.json``: TSSE on a plane through θ* of one fit's
    training rows (:func:`lrexp.core.landscape.plane`), with its path over it."""
    ds = p.dataset
    i, path, what = landscape_path(p, folds)
    tr = p.parts[i][0]
    names = ["bias", *(f"θ{j} ({n})" for j, n in enumerate(ds.feature_names, start=1))]
    f = folds[i]
    plane = landscape.plane(
        ds.X[tr], ds.y[tr], p.scalers[i], f.theta_star, names, tsse_star=f.optimum["tsse"]
    )
    u = plane.project(path)
    svg = landscape_svg.landscape(
        plane,
        [(f"{p.cfg.optimizer.name}, lr={p.cfg.optimizer.lr:g}", u)],
        f"TSSE landscape and path: {p.title.removeprefix('lrexp: ')}",
        notes=landscape_svg.plane_notes(plane, what),
    )
    doc = landscape.to_json(plane, u, what=what)
    return {"plots/landscape.svg": svg, "landscape.json": json.dumps(doc)}
