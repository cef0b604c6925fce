"""The best runs of a sweep (or of a comparison) on one TSSE landscape: each run's path read back
from its ``landscape.json``, drawn over the best run's landscape, runs on other data left out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from lrexp.core import landscape
from lrexp.report import landscape as landscape_svg
from lrexp.tracking import reader

PATHS = 5  # runs whose paths are drawn on a sweep's landscape, best first
READ = 3 * PATHS  # runs whose landscape.json is read, best first, to find them


def path_label(run: dict, rank: int, score: float) -> str:
    """A path's legend entry: its rank, optimizer and lr (and momentum), its score."""
    p = run["params"]
    what = ", ".join(
        f"{k.split('.')[-1]}={p[k]}" for k in ("optimizer.lr", "optimizer.momentum") if k in p
    )
    name = p.get("optimizer.name", run["name"])
    tail = f"  (test MSE {score:.4g})" if math.isfinite(score) else ""
    return f"{rank}. {name}" + (f", {what}" if what else "") + tail


def sweep_landscape(uri: str, runs: Sequence[dict], scores: Sequence[float]) -> str | None:
    """The best runs' paths on the best run's landscape (``runs`` best first, each a dict with
    run_id, name, params; ``scores`` their test MSE): only runs on the same landscape (same data,
    split and scaling) are drawn; the others are left out and counted. None where no run logged
    a ``landscape.json``."""
    ref, drawn, other, missing = None, [], 0, 0
    for run, score in list(zip(runs, scores, strict=True))[:READ]:
        doc = reader.artifact_text(uri, run["run_id"], "landscape.json")
        if doc is None:
            missing += 1
            continue
        plane, path = landscape.from_json(json.loads(doc))
        if ref is None:
            ref, what = plane, json.loads(doc).get("path_of", "")
        if not landscape.same_plane(ref, plane):
            other += 1
        elif len(drawn) < PATHS:
            drawn.append((path_label(run, len(drawn) + 1, score), path))
    if ref is None:
        return None
    notes = landscape_svg.plane_notes(ref, f"{what} (the best run's)")
    if other:
        notes.append(f"{other} of the best {min(len(runs), READ)} runs trained on other data or "
                     "splits (another landscape): left out")  # fmt: skip
    if missing:
        notes.append(f"{missing} runs logged no landscape: left out")
    title = f"the sweep's best {len(drawn)} paths on one TSSE landscape"
    return landscape_svg.landscape(ref, drawn, title, notes=notes)
