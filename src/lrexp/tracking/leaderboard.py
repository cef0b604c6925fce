"""A sweep's leaderboard: one row per child run, best first, the failed and diverged apart
with their reason; the statistics across seeds; and the summary printed at a sweep's end.
Plain pandas over the child runs' records (as :func:`lrexp.tracking.reader.child_runs` gives
them)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from lrexp.core.objective import objective
from lrexp.core.verdict import EXCESS_TOL, percent


def failure(run: dict) -> str | None:
    """Why ``run`` is left out of plots and rankings: it failed or was killed, or it diverged
    (its curves run to 1e44 and flatten every healthy one); None for a healthy run."""
    tags, status = run["tags"], run["status"]
    if status in ("FAILED", "KILLED"):
        return tags.get("lrexp.failure_reason") or status
    step = run["metrics"].get("diverged_step")
    if (step is not None and math.isfinite(step)) or tags.get("lrexp.verdict", "").startswith(
        "diverged"
    ):
        where = f" at step {step:.0f}" if step is not None and math.isfinite(step) else ""
        return tags.get("lrexp.failure_reason") or f"diverged{where}"
    return None


def without_seed(overrides: str) -> str:
    """Overrides with any ``train.seed=…`` removed: the config a seed group shares."""
    kept = [o for o in overrides.split(",") if o and not re.match(r"^\+*train\.seed=", o)]
    return ",".join(kept) or "(defaults)"


def leaderboard(children: list[dict]) -> pd.DataFrame:
    """One row per child run, best test MSE first; failed jobs last, with their reason."""
    rows = [
        {
            "job": int(c["tags"].get("lrexp.job_num", -1)),
            "run": c["name"],
            "status": c["status"],
            "test_mse": objective(c["metrics"]),
            "train_mse": c["metrics"].get("final_train_mse", math.nan),
            "excess_train_mse": c["metrics"].get("excess_train_mse", math.nan),
            "converged": c["tags"].get("lrexp.converged", ""),  # true/false; "" if not judged
            "gap_theta": c["metrics"].get("gap_theta", math.nan),
            "epochs_run": c["metrics"].get("epochs_run", math.nan),
            "seed": c["params"].get("train.seed", ""),
            "config_noseed": c["tags"].get("lrexp.config_hash_noseed", ""),
            "reason": failure(c) or "",
            "run_id": c["run_id"],
        }
        for c in children
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "job",
            "run",
            "status",
            "test_mse",
            "train_mse",
            "excess_train_mse",
            "converged",
            "gap_theta",
            "epochs_run",
            "seed",
            "config_noseed",
            "reason",
            "run_id",
        ],
    )
    frame["ok"] = (frame["reason"] == "") & np.isfinite(frame["test_mse"])
    frame = frame.sort_values(["ok", "test_mse", "job"], ascending=[False, True, True])
    return frame.drop(columns="ok").reset_index(drop=True)


def seed_stats(board: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and min of the test MSE across seeds, for each config run with several seeds."""
    done = board[(board["reason"] == "") & np.isfinite(board["test_mse"])]
    groups = []
    for _, g in done.groupby("config_noseed"):
        if g["seed"].nunique() < 2:
            continue
        groups.append(
            {
                "config": without_seed(g["run"].iloc[0]),
                "seeds": len(g),
                "mean_test_mse": g["test_mse"].mean(),
                "std_test_mse": g["test_mse"].std(ddof=1),
                "min_test_mse": g["test_mse"].min(),
            }
        )
    frame = pd.DataFrame(
        groups, columns=["config", "seeds", "mean_test_mse", "std_test_mse", "min_test_mse"]
    )
    return frame.sort_values("mean_test_mse").reset_index(drop=True)


def _yes_no(tag: str) -> str:
    return {"true": "yes", "false": "NO"}.get(tag, "—")


def text(board: pd.DataFrame, seeds: pd.DataFrame, parent: str, top: int = 10) -> str:
    finished = board[board["status"] == "FINISHED"]
    failed = board[board["status"] != "FINISHED"]
    healthy, left_out = board[board["reason"] == ""], board[board["reason"] != ""]
    converged = int((finished["converged"] == "true").sum())
    lines = [
        f"lrexp sweep: {len(finished)} finished ({converged} converged), {len(failed)} failed "
        f"(parent run {parent})"
    ]
    if len(healthy):
        lines.append(f"  {'test MSE':>12} {'train MSE':>12} {'excess':>9} {'converged':>9}  run")
        for _, r in healthy.head(top).iterrows():
            lines.append(
                f"  {r['test_mse']:>12.6g} {r['train_mse']:>12.6g} "
                f"{r['excess_train_mse']:>9.3g} {_yes_no(r['converged']):>9}  {r['run']}"
            )
        if len(healthy) > top:
            lines.append(f"  … {len(healthy) - top} more in leaderboard.csv")
    if len(seeds):
        lines.append("  across seeds (mean ± std, min):")
        for _, r in seeds.iterrows():
            lines.append(
                f"    {r['mean_test_mse']:.6g} ± {r['std_test_mse']:.3g}, "
                f"{r['min_test_mse']:.6g}  {r['config']} ({r['seeds']} seeds)"
            )
    if len(left_out):
        lines.append("  left out of the ranking and the overlay:")
    for _, r in left_out.iterrows():
        what = "DIVERGED" if r["status"] == "FINISHED" else r["status"]
        lines.append(f"  {what} job {r['job']}: {r['run']}: {r['reason']}")
    if len(finished) > converged:
        lines.append(
            "  excess: (train MSE − least squares') / var(y); converged: excess ≤ "
            f"{percent(EXCESS_TOL)} (each run's lrexp.advice tag says what would help)"
        )
    return "\n".join(lines)
