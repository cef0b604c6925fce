"""Every optimizer, at its defaults, fits real data sets of different sizes and target scales.

The data ship with packages: scikit-learn's diabetes (442 × 10, target ≈ 150), Linnerud (20 × 3,
target Weight ≈ 180), wine (178 × 12, target proline up to 1680), and Longley's 16 rows of US
economic data (target TOTEMP ≈ 65,000, features from 83 to 550,000, nearly collinear):
``tests/data/longley.csv``, as statsmodels ships it (``statsmodels.datasets.longley``, from
NIST's StRD, https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml; public domain).

Each is written to a CSV and trained through :func:`lrexp.pipeline.run`, as a user would; the
oracle is NumPy's ``lstsq`` on the same training rows, and R² is computed here from θ.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import typed_config
from sklearn import datasets

from lrexp import pipeline
from lrexp.core import optim

R2_TOLERANCE = 0.02  # train R² within this of the least-squares fit's
LONGLEY = Path(__file__).parent / "data" / "longley.csv"


def _write(path: Path, X: np.ndarray, y: np.ndarray, names: list[str], target: str) -> Path:
    header = ",".join([*(n.replace("/", "_") for n in names), target])
    np.savetxt(
        path, np.column_stack([X, y]), delimiter=",", header=header, comments="", fmt="%.17g"
    )
    return path


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (CSV path, target column)."""
    d = tmp_path_factory.mktemp("realdata")
    diabetes = datasets.load_diabetes()
    linnerud = datasets.load_linnerud()
    wine = datasets.load_wine()
    j = wine.feature_names.index("proline")
    others = [n for n in wine.feature_names if n != "proline"]
    return {
        "diabetes": (
            _write(d / "diabetes.csv", diabetes.data, diabetes.target, diabetes.feature_names, "y"),
            "y",
        ),
        "linnerud": (
            _write(
                d / "linnerud.csv",
                linnerud.data,
                linnerud.target[:, linnerud.target_names.index("Weight")],
                linnerud.feature_names,
                "Weight",
            ),
            "Weight",
        ),
        "wine": (
            _write(
                d / "wine.csv", np.delete(wine.data, j, axis=1), wine.data[:, j], others, "proline"
            ),
            "proline",
        ),
        "longley": (LONGLEY, "TOTEMP"),
    }


def _r2(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    r = y - theta[0] - X @ theta[1:]
    return 1.0 - float(r @ r) / float(np.sum((y - y.mean()) ** 2))


def _columns(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The CSV's features and target, read with NumPy (not lrexp's loader)."""
    header = path.read_text().splitlines()[0].split(",")
    values = np.loadtxt(path, delimiter=",", skiprows=1)
    j = header.index(target)
    return np.delete(values, j, axis=1), values[:, j]


@pytest.mark.parametrize("optimizer", sorted(optim.OPTIMIZERS))
@pytest.mark.parametrize("name", ["diabetes", "linnerud", "wine", "longley"])
def test_every_optimizer_at_its_defaults_reaches_least_squares_on_real_data(
    real_data, name, optimizer
):
    path, target = real_data[name]
    cfg = typed_config(
        "data=csv",
        f"data.path={path}",
        f"data.target={target}",
        f"optimizer={optimizer}",
        "tracking.enabled=false",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = pipeline.run(cfg, base_dir=path.parent)
    train_rows = pipeline.prepare(cfg, path.parent).parts[0][0]
    X, y = _columns(path, target)
    X, y = X[train_rows], y[train_rows]
    oracle = np.linalg.lstsq(np.column_stack([np.ones(len(X)), X]), y, rcond=None)[0]

    assert outcome.folds[0].fit.diverged_step is None
    best, ours = _r2(oracle, X, y), _r2(outcome.theta, X, y)
    assert ours == pytest.approx(outcome.summary["final_train_r2"], abs=1e-9)
    assert ours >= best - R2_TOLERANCE, (name, optimizer, ours, best)
    # θ* reported in the data's units is the oracle's (to its conditioning)
    assert _r2(outcome.theta_star, X, y) == pytest.approx(best, abs=1e-9)
