"""The TSSE landscape: a plane through θ*, the optimizer's path on it, one run's figure and a
sweep's.

The oracles are independent: TSSE summed directly over the rows in NumPy (the bias set to its
best, ȳ − x̄·w, where the plane profiles it), θ* from ``numpy.linalg.lstsq``, the eigen-directions
from ``numpy.linalg.eigh`` of the centred standardized design. The runs are real: three
in-process jobs of one sweep (SGD at three learning rates) in the session's SQLite store,
summarized by the sweep's own code.
"""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import typed_config
from mlflow.tracking import MlflowClient

from lrexp import pipeline
from lrexp.core import landscape
from lrexp.core.data import Standardizer
from lrexp.pipeline.job import SweepJob
from lrexp.pipeline.prepare import prepare
from lrexp.report import landscape as landscape_svg
from lrexp.tracking import sweep_summary

SVG = "{http://www.w3.org/2000/svg}"
# One optimizer at three learning rates: one compiled program for the three jobs (each optimizer
# compiles its own, seconds on a busy machine); docs/landscape-sweep.png compares optimizers.
LRS = ("0.015", "0.008", "0.004")
SMALL = ["train.epochs=25", "tracking.log_model=false", "optimizer=sgd"]


def design(m: int, n: int = 120, seed: int = 0):
    """Rows on scales and offsets far from standard, a target far from zero, its scaling."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, m)) * rng.uniform(0.5, 30, m) + rng.uniform(-50, 50, m)
    X[:, -1] += 0.8 * X[:, 0]  # correlated: the plane's directions are not the axes
    y = 100 + X @ rng.normal(size=m) + rng.normal(size=n) * 5
    st = Standardizer.fit(X, tuple(f"x{j}" for j in range(m))).with_target(y, key="k", value=None)
    star = np.linalg.lstsq(np.column_stack([np.ones(n), X]), y, rcond=None)[0]
    return X, y, st, star


def direct_tsse(X, y, b, w) -> np.ndarray:
    """Σ (y − b − X·w)² for each row of b (T,) and w (T, M)."""
    r = y[None] - np.asarray(b)[:, None] - np.asarray(w) @ X.T
    return np.sum(r * r, axis=1)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_grid_tsse_equals_tsse_summed_over_the_rows(m):
    X, y, st, star = design(m)
    p = landscape.plane(X, y, st, star, ["bias", *(f"θ{j}" for j in range(1, m + 1))])
    box = landscape.extent(p, [p.centre[None] + np.array([[3.0, -2.0]])])
    xs, ys, Z = landscape.grid(p, box, n=7)
    U = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    if m == 1:  # the bias and the weight themselves
        b, w = U[:, 0], U[:, 1:]
    elif m == 2:  # the weights themselves, the bias at its best
        w = U
        b = y.mean() - w @ X.mean(axis=0)
    else:  # steepest and flattest directions of X̃ᵀX̃, in standardized weights
        Xc = st.apply(X) - st.apply(X).mean(axis=0)
        _, vec = np.linalg.eigh(Xc.T @ Xc)
        w_t = st.to_standardized(star)[1:] + U[:, :1] * vec[:, -1] + U[:, 1:] * vec[:, 0]
        w = w_t * st.y_scale / st.scale
        b = y.mean() - w @ X.mean(axis=0)
    np.testing.assert_allclose(Z.reshape(-1), direct_tsse(X, y, b, w), rtol=1e-9)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_plane_is_centred_on_least_squares_and_lowest_there(m):
    X, y, st, star = design(m, seed=1)
    p = landscape.plane(X, y, st, star, ["bias", *(f"θ{j}" for j in range(1, m + 1))])
    np.testing.assert_allclose(p.lift(p.centre), star, rtol=1e-9)
    np.testing.assert_allclose(p.project(star[None])[0], p.centre, atol=1e-9)
    assert p.tsse_star == pytest.approx(direct_tsse(X, y, star[:1], star[None, 1:])[0], rel=1e-9)
    assert np.all(np.linalg.eigvalsh(p.quad) > 0)  # the centre is the plane's lowest point
    u = p.centre + np.array([[0.1, 0.0], [0.0, -0.1], [0.05, 0.05]])
    np.testing.assert_allclose(p.project(p.lift(u)), u, atol=1e-9)


def test_json_round_trip_keeps_the_plane_and_the_path():
    X, y, st, star = design(3)
    p = landscape.plane(X, y, st, star, ["bias", "a", "b", "c"])
    path = np.array([[1.0, 2.0], [np.nan, 0.5], [0.0, 0.0]])
    q, back = landscape.from_json(json.loads(json.dumps(landscape.to_json(p, path, what="x"))))
    assert landscape.same_plane(p, q)
    np.testing.assert_array_equal(back, path)
    other = landscape.plane(*design(3, seed=2)[:2], st, star, ["bias", "a", "b", "c"])
    assert not landscape.same_plane(p, other)


def test_a_diverged_path_draws_without_a_warning_or_a_bad_number(recwarn):
    X, y, st, star = design(3)
    p = landscape.plane(X, y, st, star, ["bias", "a", "b", "c"])
    huge = np.array([[0.0, 0, 0, 0], [1e200, 1e200, -1e200, 1e200], [np.inf, np.nan, 0, 0]])
    for path in (p.project(huge), p.project(np.zeros((0, 4)))):
        svg = landscape_svg.landscape(p, [("x", path)], "t")
        ET.fromstring(svg)
        assert not re.search(r"\b(inf|nan)\b", svg, flags=re.I)
        json.dumps(landscape.to_json(p, path, what="x"), allow_nan=False)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def svg_root(text: str) -> ET.Element:
    return ET.fromstring(text)


def of_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def texts(root: ET.Element) -> str:
    return "\n".join("".join(e.itertext()) for e in root.iter(f"{SVG}text"))


@pytest.fixture(scope="module")
def sweep(store_uri, tmp_path_factory):
    """Three jobs of one sweep, run in this process under a parent, then summarized; and a run
    on another split of the data, outside the sweep."""
    base = tmp_path_factory.mktemp("landscape")
    client = MlflowClient(store_uri)
    exp_id = client.create_experiment(
        f"test-{uuid.uuid4().hex[:12]}", artifact_location=str(base / "artifacts")
    )
    parent = client.create_run(exp_id, tags={"lrexp.sweep": "true"}).info.run_id
    children = {}
    for job, lr in enumerate(LRS):
        overrides = [f"tracking.uri={store_uri}", f"optimizer.lr={lr}", *SMALL]
        cfg = typed_config(*overrides)
        job_of = SweepJob(parent, exp_id, job)
        out = pipeline.run(cfg, base_dir=base, overrides=overrides, sweep=job_of)
        children[lr] = (out, cfg)
    sweep_summary.summarize(store_uri, exp_id, parent)
    overrides = [f"tracking.uri={store_uri}", "train.seed=1", *SMALL]  # another split
    other = pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
    children["other data"] = (other, None)  # no child of the sweep: other data
    return store_uri, parent, children, base


def artifact(uri: str, run_id: str, path: str, base: Path) -> str:
    dst = base / uuid.uuid4().hex
    dst.mkdir()
    return Path(MlflowClient(uri).download_artifacts(run_id, path, str(dst))).read_text()


def test_run_logs_a_landscape_with_its_path_start_end_and_theta_star(sweep):
    uri, _, children, base = sweep
    out, _ = children[LRS[1]]
    root = svg_root(artifact(uri, out.run_id, "plots/landscape.svg", base))
    assert len(of_class(root, "polyline", "path")) == 1
    assert len(of_class(root, "circle", "start")) == 1
    assert len(of_class(root, "rect", "end")) == 1
    assert len(of_class(root, "polygon", "theta-star")) == 2  # on the plot and in the legend
    assert len(list(root.iter(f"{SVG}ellipse"))) >= 4  # contours, log-spaced
    words = texts(root)
    lr = f"sgd, lr={float(LRS[1]):g}"
    for expected in (lr, "θ* (least squares)", "start", "end", "TSSE − TSSE*",
                     "steepest direction of X̃ᵀX̃", "flattest direction"):  # fmt: skip
        assert expected in words, expected


def test_landscape_centre_is_least_squares_and_a_converged_path_ends_there(sweep):
    uri, _, children, base = sweep
    out, cfg = children[LRS[0]]
    doc = json.loads(artifact(uri, out.run_id, "landscape.json", base))
    p = prepare(cfg, base)
    tr = p.parts[0][0]
    X, y = p.dataset.X[tr], p.dataset.y[tr]
    star = np.linalg.lstsq(np.column_stack([np.ones(len(y)), X]), y, rcond=None)[0]
    np.testing.assert_allclose(doc["theta_star"], star, rtol=1e-6, atol=1e-9)
    plane, path = landscape.from_json(doc)
    assert out.verdict.converged
    start, end = np.linalg.norm(path[0] - plane.centre), np.linalg.norm(path[-1] - plane.centre)
    assert end < 0.05 * start, (start, end)
    # the end's TSSE on the plane is the last θ's, had it no off-plane part: at most the run's
    assert plane.tsse(path[-1]) <= out.folds[0].train["tsse"] * (1 + 1e-6)


def test_sweep_parent_draws_the_best_paths_on_one_landscape(sweep):
    uri, parent, _, base = sweep
    root = svg_root(artifact(uri, parent, "plots/landscape.svg", base))
    assert len(of_class(root, "polyline", "path")) == len(LRS)
    colours = {e.get("stroke") for e in of_class(root, "polyline", "path")}
    assert len(colours) == len(LRS)
    words = texts(root)
    for lr in LRS:
        assert f". sgd, lr={lr}" in words, lr
    assert "left out" not in words  # the three share the data, split and scaling


def test_runs_on_other_data_are_left_out_of_a_landscape_and_counted(sweep):
    from lrexp.tracking import landscapes

    uri, _, children, _ = sweep
    runs = [MlflowClient(uri).get_run(out.run_id) for out, _ in children.values()]
    as_dicts = [{"run_id": r.info.run_id, "name": r.info.run_name, "params": r.data.params}
                for r in runs]  # fmt: skip
    other_first = [as_dicts[-1], *as_dicts[:-1]]
    for order, drawn in ((as_dicts, 3), (other_first, 1)):  # the best run's landscape is used
        svg = svg_root(landscapes.sweep_landscape(uri, order, [1.0, 2.0, 3.0, 4.0]))
        assert len(of_class(svg, "polyline", "path")) == drawn
        left = 4 - drawn
        assert f"{left} of the best 4 runs trained on other data" in texts(svg)
